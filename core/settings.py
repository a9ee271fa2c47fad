"""Service configuration: one pydantic-settings object read from ``BACKPROP_*`` variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the service; each field is the variable ``BACKPROP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="BACKPROP_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///backprop.db",
        description="SQLAlchemy URL; plain postgresql:// URLs use psycopg 3.",
    )
    db_pool_size: int = Field(
        default=20,
        description="Database connections kept open per process (as many more may open "
        "under load); below the API's concurrency, connections churn.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis for the Celery broker and the metric streams.",
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker URL; defaults to redis_url."
    )
    task_queue: str = Field(
        default="backprop", description="Celery queue that runs are sent to and workers take."
    )
    small_job_threshold: int = Field(
        default=100_000_000,
        description="Runs with parameters x samples x epochs below this go to the queue "
        "<task_queue>.small, the others to <task_queue>.large.",
    )
    max_sweep_trials: int = Field(
        default=1000, description="Most runs (trials x folds) of one sweep."
    )
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, description="Largest dataset upload.")
    max_dataset_cells: int = Field(
        default=20_000_000, description="Largest rows x (features + targets) of a dataset."
    )
    max_parameters: int = Field(default=5_000_000, description="Most weights+biases of a network.")
    max_epochs: int = Field(default=100_000, description="Most epochs of one run.")
    max_batch_size: int = Field(default=65_536, description="Largest mini-batch.")
    checkpoint_every: int = Field(
        default=10, description="Checkpoint every k epochs (also bounded by checkpoint_seconds)."
    )
    checkpoint_seconds: float = Field(
        default=10.0, description="At most this many seconds of work between checkpoints."
    )
    stream_maxlen: int = Field(
        default=100_000, description="Approximate cap on events kept in one run's Redis Stream."
    )
    stream_ttl_s: int = Field(
        default=86_400, description="A finished run's Redis Stream expires after this long."
    )
    blas_threads: int = Field(default=1, description="BLAS threads per worker process.")
    worker_concurrency: int = Field(default=2, description="Worker processes of one worker.")
    sse_ping_s: float = Field(default=15.0, description="Keep-alive comment interval on SSE.")
    log_level: str = Field(default="INFO", description="Log level of api and worker.")
    access_log: bool = Field(
        default=False,
        description="One log line per HTTP request (costs ~15 % of a status read; requests "
        "are counted and timed in /metrics either way).",
    )
    log_format: str = Field(
        default="json", description="json (one object per line, with run_id) or text."
    )
    auth: bool = Field(
        default=True,
        description="API keys required (on/off). off is accepted only on a loopback address.",
    )
    auth_cache_s: float = Field(
        default=5.0, description="How long an API process trusts a key lookup (revocation delay)."
    )
    webhook_secret: str | None = Field(
        default=None, description="Signs webhooks when auth is off (with auth, each key has one)."
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow callback_url targets on loopback, link-local and private networks.",
    )
    webhook_max_attempts: int = Field(
        default=6, ge=1, description="Webhook deliveries tried per run (then it is failed)."
    )
    webhook_backoff_s: float = Field(
        default=1.0,
        gt=0,
        description="Wait before the second webhook attempt; doubles per attempt, at most 60 s.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (JSON list); none by default."
    )
    max_request_bytes: int = Field(
        default=10 * 1024 * 1024, description="Largest JSON request body (dataset uploads aside)."
    )
    max_json_depth: int = Field(
        default=64,
        ge=1,
        description="Deepest nesting of arrays/objects in a JSON request body (400 above).",
    )
    max_active_runs: int = Field(
        default=100, description="Most queued + running runs of one client."
    )
    max_runtime_s: float = Field(
        default=7 * 86_400, description="Longest a run may train (and the default for each run)."
    )
    requeue_after_s: float = Field(
        default=300.0,
        description="A run still queued this long after its message was sent is sent again "
        "(its message may have been lost).",
    )
    dispatch_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="How often each worker re-announces itself, looks for messages lost "
        "with Redis and sends queued runs to free workers (they are also sent at once on "
        "submit and whenever a run ends).",
    )
    lease_s: float = Field(
        default=30.0,
        description="A running run's lease; its worker renews it, and a run whose lease "
        "expired is taken over by another worker.",
    )
    db_retry_s: float = Field(
        default=300.0,
        description="How long a worker keeps retrying while the database is unreachable.",
    )
    max_attempts: int = Field(
        default=3, description="A run whose worker died this many times ends failed."
    )
    celery_visibility_timeout_s: int = Field(
        default=3600, description="Redis broker visibility timeout (the lease does recovery)."
    )

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
