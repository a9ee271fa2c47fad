"""The life of one run inside a worker: claim it, train it, record the outcome.

Kept apart from Celery so the lifecycle reads top to bottom and runs in tests as a plain
function. Every database write is a short transaction of its own; Redis only mirrors what
the database already holds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import redis
from sqlalchemy import (
    Connection,
    CursorResult,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.broker import enqueue_webhook
from core.data import ParsedDataset, from_npz_bytes
from core.db.models import Checkpoint, Dataset, MetricRow, ModelArtifact, Run, RunStatus, utcnow
from core.db.session import TRANSIENT_ERRORS, get_autocommit_engine, retry_transient, session_scope
from core.dispatch import freed, request_dispatch
from core.engine import EngineError, Network
from core.engine.training import validation_size
from core.settings import Settings, get_settings
from core.spec import NetworkSpec, TrainingConfig
from core.streams import EVENT_METRIC, EVENT_STATUS, EventPublisher, Publisher
from core.sweep_runs import PruneCheck, after_run_end
from core.telemetry import epoch_increments, run_ended_increments
from workers.lifecycle import handback_requested

logger = logging.getLogger(__name__)

T = TypeVar("T")


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dataset_column(column: Any) -> Any:
    """``column`` of the run's dataset, as a subquery correlated to the updated run."""
    return select(column).where(Dataset.id == Run.dataset_id).scalar_subquery().label(column.key)


# Datasets never change once stored, so a worker keeps the last few it parsed: runs on
# the same data (sweeps, retries, many small jobs) skip decoding it again.
_DATASET_CACHE: OrderedDict[str, ParsedDataset] = OrderedDict()
_DATASET_CACHE_SIZE = 4


def _parsed_dataset(dataset_id: str, blob: bytes) -> ParsedDataset:
    cached = _DATASET_CACHE.get(dataset_id)
    if cached is not None:
        _DATASET_CACHE.move_to_end(dataset_id)
        return cached
    parsed = from_npz_bytes(blob)
    _DATASET_CACHE[dataset_id] = parsed
    while len(_DATASET_CACHE) > _DATASET_CACHE_SIZE:
        _DATASET_CACHE.popitem(last=False)
    return parsed


# The per-epoch statements, built once: their values are parameters, so SQLAlchemy
# compiles them a single time instead of once per epoch. (SQLAlchemy types a mapped class's
# __table__ as FromClause; a declarative class has a Table.)
_runs = cast(Table, Run.__table__)
_RECORD_PROGRESS = (
    update(_runs)
    .where(_runs.c.id == bindparam("run_id"), _runs.c.lease_owner == bindparam("me"))
    .values(
        epoch=bindparam("epoch"), metrics=bindparam("metrics"), lease_expires_at=bindparam("lease")
    )  # fmt: skip
    .returning(_runs.c.cancel_requested)
)
_INSERT_METRIC = insert(cast(Table, MetricRow.__table__))


class LeaseLost(Exception):
    """Another worker took the run over: this one must stop touching it."""


@dataclass
class _Job:
    """What a claimed run needs to train."""

    network: dict[str, Any]
    training: dict[str, Any]
    dataset: bytes | None
    classes: list[Any] | None
    dataset_id: str
    checkpoint: bytes | None = None
    checkpoint_epoch: int = 0
    recorded_epochs: int = 0  # metric rows already stored by earlier attempts


class RunTrainer:
    """Trains one run by id. ``run()`` is idempotent: a second delivery is a no-op."""

    def __init__(
        self,
        run_id: str,
        *,
        settings: Settings | None = None,
        redis_client: redis.Redis | None = None,
        owner: str | None = None,
        events: Publisher | None = None,
    ) -> None:
        self.run_id = run_id
        self.settings = settings or get_settings()
        self.me = owner or worker_identity()
        if events is None:
            client = redis_client or redis.Redis.from_url(self.settings.redis_url)
            events = EventPublisher(
                client, maxlen=self.settings.stream_maxlen, ttl_s=self.settings.stream_ttl_s
            )
        self.events = events
        self._train_samples = 0
        self._last_elapsed = 0.0
        self._cancel = False
        self._stop_note: str | None = None  # why a cancelled run stopped (pruned)
        self._prune_check = PruneCheck(run_id, self.me, sweep_id=None)
        self._sweep_id: str | None = None
        self._has_webhook = False
        self._has_checkpoint = False
        self._recorded_epochs = 0
        self._epochs = 0
        self._dataset_id = ""
        self._handing_back = False
        self._runtime_exceeded = False
        self._last_epoch = 0
        self._stopped_at: int | None = None
        self._deadline: float | None = None
        self._last_checkpoint = (0, time.monotonic())
        self._slot_announced = False  # the next run was requested while this one ended

    def _tx(self, what: str, body: Callable[[Session], T]) -> T:
        """Run ``body`` in a transaction of its own, retried while the database is away."""

        def attempt() -> T:
            with session_scope() as s:
                return body(s)

        return retry_transient(
            attempt, give_up_after_s=self.settings.db_retry_s, what=f"{what} run {self.run_id}"
        )

    def _single(self, what: str, body: Callable[[Connection], T]) -> T:
        """Run ``body``'s statements each on its own (autocommit), retried while the
        database is away: one round trip per statement, no BEGIN/COMMIT. Only for steps
        whose statements are safe one by one (see ``claim`` and ``_on_epoch``)."""

        def attempt() -> T:
            with get_autocommit_engine().connect() as conn:
                return body(conn)

        return retry_transient(
            attempt, give_up_after_s=self.settings.db_retry_s, what=f"{what} run {self.run_id}"
        )

    # -- claiming -------------------------------------------------------------------
    def claim(self) -> tuple[str, _Job | None]:
        """Take the run if it is queued, or running under an expired lease, and load it.

        Returns ``("claimed", job)``, ``("cancelled", None)`` (cancel was asked while no
        worker held it), ``("gave up", None)`` (its workers died ``max_attempts`` times: it
        is marked failed instead of tried again) or ``("not claimable", None)``. A first
        attempt costs one statement (one round trip).
        """
        max_attempts = self.settings.max_attempts

        def claim_statements(s: Connection) -> tuple[str, _Job | None]:
            # The claim is one UPDATE … RETURNING (the dataset comes along by subquery):
            # atomic on its own, so it needs no transaction around it.
            now = utcnow()
            claimable = and_(
                Run.id == self.run_id,
                or_(
                    Run.status == RunStatus.queued.value,
                    and_(
                        Run.status == RunStatus.running.value,
                        or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
                    ),
                ),
            )
            row = s.execute(
                update(Run)
                .where(claimable, Run.attempts < max_attempts, Run.cancel_requested.is_(False))
                .values(
                    status=RunStatus.running.value,
                    lease_owner=self.me,
                    lease_expires_at=now + timedelta(seconds=self.settings.lease_s),
                    attempts=Run.attempts + 1,
                    started_at=func.coalesce(Run.started_at, now),
                )
                .returning(
                    Run.epoch,
                    Run.network,
                    Run.training,
                    Run.sweep_id,
                    Run.dataset_id,
                    Run.callback_url,
                    _dataset_column(Dataset.data),
                    _dataset_column(Dataset.classes),
                )  # fmt: skip
                .execution_options(synchronize_session=False)
            ).first()
            if row is None:
                # Cancelled while its worker was away (it died or handed the run back):
                # it ends here, untrained, rather than training one more epoch first.
                cancelled = s.execute(
                    update(Run)
                    .where(claimable, Run.cancel_requested.is_(True))
                    .values(
                        status=RunStatus.cancelled.value,
                        finished_at=now,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                    .returning(Run.callback_url, Run.sweep_id)
                ).first()
                if cancelled is not None:
                    s.execute(delete(Checkpoint).where(Checkpoint.run_id == self.run_id))
                    self._has_webhook, self._sweep_id = bool(cancelled[0]), cancelled[1]
                    return "cancelled", None
                gave_up = s.execute(
                    update(Run)
                    .where(claimable, Run.attempts >= max_attempts)
                    .values(
                        status=RunStatus.failed.value,
                        error=f"gave up after {max_attempts} attempts: the worker training "
                        "this run stopped unexpectedly each time (out of memory, or killed?)",
                        finished_at=now,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                    .returning(Run.callback_url, Run.sweep_id)
                    .execution_options(synchronize_session=False)
                ).first()
                if gave_up is None:
                    return "not claimable", None
                s.execute(delete(Checkpoint).where(Checkpoint.run_id == self.run_id))
                self._has_webhook, self._sweep_id = bool(gave_up[0]), gave_up[1]
                return "gave up", None
            job = _Job(row.network, row.training, row.data, row.classes, row.dataset_id)
            if row.epoch > 0:  # an earlier attempt trained: it left metrics, maybe a checkpoint
                checkpoint = s.execute(
                    select(Checkpoint.epoch, Checkpoint.data).where(
                        Checkpoint.run_id == self.run_id
                    )
                ).first()
                if checkpoint is not None:
                    job.checkpoint_epoch, job.checkpoint = checkpoint[0], checkpoint[1]
                job.recorded_epochs = (
                    s.scalar(
                        select(func.max(MetricRow.epoch)).where(MetricRow.run_id == self.run_id)
                    )
                    or 0
                )
            self._has_webhook, self._sweep_id = bool(row.callback_url), row.sweep_id
            return "claimed", job

        return self._single("claiming", claim_statements)

    # -- the whole job --------------------------------------------------------------
    def run(self) -> str | None:
        """Train the run to its end; returns the terminal status, or None if not ours."""
        outcome, job = self.claim()
        if outcome == "cancelled":
            logger.info("run %s cancelled before it could resume", self.run_id)
            self._announce_end(RunStatus.cancelled, None, duration_s=None)
            return RunStatus.cancelled.value
        if outcome == "gave up":
            logger.warning("run %s failed: its workers died %d times", self.run_id,
                           self.settings.max_attempts)  # fmt: skip
            self._announce_end(RunStatus.failed, None, duration_s=None)
            return RunStatus.failed.value
        if job is None:
            logger.info(
                "run %s is not claimable (finished, cancelled or alive elsewhere)", self.run_id
            )
            request_dispatch()  # this duplicate message held a slot: it is free again
            return None
        self._recorded_epochs = job.recorded_epochs
        if job.checkpoint is not None:
            self._last_checkpoint = (job.checkpoint_epoch, time.monotonic())
            self._has_checkpoint = True
        self._prune_check = PruneCheck(self.run_id, self.me, sweep_id=self._sweep_id)

        self.events.publish(self.run_id, EVENT_STATUS, {"status": RunStatus.running.value})

        heartbeat = _Heartbeat(self)
        heartbeat.start()
        try:
            self._dataset_id = job.dataset_id
            return self._train(job.network, job.training, job.dataset, job.classes, job.checkpoint)
        except LeaseLost:
            logger.warning("run %s: lease lost to another worker; stopping here", self.run_id)
            return None
        finally:
            heartbeat.stop()

    def _train(
        self,
        network: dict[str, Any],
        training: dict[str, Any],
        dataset_blob: bytes | None,
        classes: list[Any] | None,
        resume: bytes | None,
    ) -> str | None:
        try:
            spec = NetworkSpec.model_validate(network)
            config = TrainingConfig.model_validate(training)
            self._epochs = config.epochs
            if dataset_blob is None:
                raise EngineError("the run's dataset no longer exists")
            data = _parsed_dataset(self._dataset_id, dataset_blob)
            self._train_samples = data.n_samples - validation_size(data.n_samples, config)
            net = Network.from_spec(spec, seed=config.seed)
            net.classes = classes
            if config.max_runtime_s is not None:
                self._deadline = time.monotonic() + config.max_runtime_s
            history = net.fit(
                data.X,
                data.y,
                config,
                callback=self._on_epoch,
                should_stop=self._should_stop,
                checkpoint_due=self._checkpoint_due,
                on_checkpoint=self._on_checkpoint,
                resume_from=resume,
            )
        except LeaseLost:
            raise  # the run is someone else's now
        except TRANSIENT_ERRORS:
            # Database away for longer than BACKPROP_DB_RETRY_S: leave the run as it is;
            # once the lease expires, the reclaimer gives it to a worker that can reach
            # the database.
            raise
        except (EngineError, ValueError) as exc:
            logger.info("run %s failed: %s", self.run_id, exc)
            return self._finish(RunStatus.failed, str(exc))
        except Exception as exc:  # a bug must not take the worker down with it
            logger.exception("run %s failed unexpectedly", self.run_id)
            return self._finish(RunStatus.failed, f"internal error: {type(exc).__name__}: {exc}")

        interrupted = (
            self._stopped_at is not None
            and bool(history)
            and (history[-1]["epoch"] == self._stopped_at and self._stopped_at < config.epochs)
        )
        if not interrupted:
            return self._finish(RunStatus.succeeded, None, artifact=net.save())
        if self._cancel:
            return self._finish(RunStatus.cancelled, self._stop_note)
        if self._runtime_exceeded:
            return self._finish(
                RunStatus.failed,
                f"exceeded max runtime of {training.get('max_runtime_s')} s",
            )
        self._hand_back()
        return None

    # -- engine callbacks -----------------------------------------------------------
    def _on_epoch(self, item: dict[str, Any]) -> None:
        item = {k: (float(v) if k != "epoch" else int(v)) for k, v in item.items()}
        epoch = self._last_epoch = item["epoch"]
        latest = {k: v for k, v in item.items() if k not in ("epoch", "elapsed_s")}

        def record(s: Connection) -> bool:
            # Two statements, each atomic on its own. Progress first: it also proves we
            # still hold the lease. Should we die between the two, the next attempt finds
            # this epoch's metric missing and records it when it trains the epoch again.
            cancel = s.execute(
                _RECORD_PROGRESS,
                {
                    "run_id": self.run_id,
                    "me": self.me,
                    "epoch": epoch,
                    "metrics": latest,
                    "lease": utcnow() + timedelta(seconds=self.settings.lease_s),
                },
            ).first()
            if cancel is None:
                raise LeaseLost(self.run_id)
            # A resumed run recomputes epochs after its checkpoint; the first record stays.
            if epoch > self._recorded_epochs:
                try:
                    s.execute(_INSERT_METRIC, metric_row)
                except IntegrityError:
                    pass  # recorded already (a takeover raced us): same values, keep it
            elif not s.scalar(
                select(MetricRow.id).where(
                    MetricRow.run_id == self.run_id, MetricRow.epoch == epoch
                )
            ):
                s.execute(_INSERT_METRIC, metric_row)
            return bool(cancel[0])

        metric_row = {
            "run_id": self.run_id,
            "epoch": epoch,
            "loss": item["loss"],
            "val_loss": item.get("val_loss"),
            "accuracy": item.get("accuracy"),
            "val_accuracy": item.get("val_accuracy"),
            "elapsed_s": item["elapsed_s"],
        }
        self._cancel = self._single(f"recording epoch {epoch}", record) or self._cancel
        # elapsed_s counts from the start of the fit (carried across a resume).
        seconds = max(item["elapsed_s"] - self._last_elapsed, 0.0)
        self._last_elapsed = item["elapsed_s"]
        self.events.publish(
            self.run_id, EVENT_METRIC, item,
            telemetry=epoch_increments(seconds, self._train_samples),
        )  # fmt: skip

    def _checkpoint_due(self, epoch: int) -> bool:
        """Asked by the engine after every epoch; only a due checkpoint is serialised."""
        # Read the shutdown flag and the clock once per epoch, here: when we stop for
        # either, the checkpoint of this very epoch is stored.
        self._handing_back = handback_requested()
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._runtime_exceeded = True
        if epoch >= self._epochs and not self._handing_back:
            return False  # the run ends here: its model is stored next, no checkpoint needed
        last_epoch, last_time = self._last_checkpoint
        return (
            self._handing_back
            or self._runtime_exceeded
            or epoch - last_epoch >= self.settings.checkpoint_every
            or time.monotonic() - last_time >= self.settings.checkpoint_seconds
        )

    def _on_checkpoint(self, epoch: int, data: bytes) -> None:
        def tx(s: Session) -> None:
            row = s.get(Checkpoint, self.run_id)
            if row is None:
                s.add(Checkpoint(run_id=self.run_id, epoch=epoch, data=data))
            else:
                row.epoch, row.data, row.created_at = epoch, data, utcnow()

        self._tx(f"checkpointing epoch {epoch}", tx)
        self._last_checkpoint = (epoch, time.monotonic())
        self._has_checkpoint = True

    def _should_stop(self) -> bool:
        if not self._cancel and (note := self._prune_check(self._last_epoch)):
            self._cancel, self._stop_note = True, note
        if self._cancel or self._runtime_exceeded or self._handing_back:
            self._stopped_at = self._last_epoch
            return True
        return False

    # -- outcome --------------------------------------------------------------------
    def _finish(
        self, status: RunStatus, error: str | None, *, artifact: bytes | None = None
    ) -> str:
        # The next run is chosen and sent while we write our last statements.
        request_dispatch(freeing=self.run_id)
        self._slot_announced = True

        def record(s: Connection) -> float | None:
            # Statement by statement, in an order that is safe to stop anywhere: the model
            # first (a retrained run stores the same bytes; a second copy is refused), then
            # the status, guarded by the lease, then the checkpoint's removal.
            if artifact is not None:
                try:
                    s.execute(insert(ModelArtifact).values(run_id=self.run_id, data=artifact))
                except IntegrityError:
                    pass
            times = s.execute(
                update(Run)
                .where(Run.id == self.run_id, Run.lease_owner == self.me)
                .values(
                    status=status.value,
                    error=error,
                    finished_at=utcnow(),
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .returning(Run.started_at, Run.finished_at)
            ).first()
            if times is None:
                raise LeaseLost(self.run_id)
            if self._has_checkpoint:
                s.execute(delete(Checkpoint).where(Checkpoint.run_id == self.run_id))
            started, finished = times
            return (finished - started).total_seconds() if started and finished else None

        try:
            duration = self._single(f"recording status {status.value}", record)
        except BaseException:
            freed(self.run_id)  # not ours to end after all: its slot is not freeing
            raise
        self._announce_end(status, error, duration_s=duration)
        logger.info("run %s %s", self.run_id, status.value)
        return status.value

    def _announce_end(
        self, status: RunStatus, error: str | None, *, duration_s: float | None
    ) -> None:
        """Tell watchers (stream), the sweep and the client's webhook that the run ended."""
        data: dict[str, Any] = {"status": status.value}
        if error:
            data["error"] = error
        self.events.publish(
            self.run_id, EVENT_STATUS, data, final=True,
            telemetry=run_ended_increments(status.value, duration_s),
        )  # fmt: skip
        if self._sweep_id is not None:
            after_run_end(self.run_id, self._sweep_id)  # admit the sweep's next trials
        if self._slot_announced:
            freed(self.run_id)
        else:  # ended at its claim: the slot is free now
            request_dispatch()
        if self._has_webhook:
            enqueue_webhook(self.run_id)

    def _hand_back(self) -> None:
        """Our worker is shutting down: re-queue the run to resume from its checkpoint."""

        def tx(s: Session) -> int:
            return cast(
                CursorResult[Any],
                s.execute(
                    update(Run)
                    .where(Run.id == self.run_id, Run.lease_owner == self.me)
                    .values(
                        status=RunStatus.queued.value,
                        lease_owner=None,
                        lease_expires_at=None,
                        enqueued_at=None,  # the dispatcher sends it to another worker
                        # A graceful hand-back is not a failed attempt.
                        attempts=Run.attempts - 1,
                    )
                    .execution_options(synchronize_session=False)
                ),
            ).rowcount

        if self._tx("handing back", tx) != 1:
            raise LeaseLost(self.run_id)
        request_dispatch()
        logger.info("run %s handed back at shutdown; it resumes from its checkpoint", self.run_id)
        return None

    def renew_lease(self) -> bool:
        with session_scope() as s:
            return (
                cast(
                    CursorResult[Any],
                    s.execute(
                        update(Run)
                        .where(Run.id == self.run_id, Run.lease_owner == self.me)
                        .values(
                            lease_expires_at=utcnow() + timedelta(seconds=self.settings.lease_s)
                        )
                        .execution_options(synchronize_session=False)
                    ),
                ).rowcount
                == 1
            )

    def refresh_cancel_flag(self) -> None:
        with session_scope() as s:
            if s.scalar(select(Run.cancel_requested).where(Run.id == self.run_id)):
                self._cancel = True


class _Heartbeat:
    """Renews the lease in the background, so an epoch longer than the lease is safe."""

    def __init__(self, trainer: RunTrainer) -> None:
        self._trainer = trainer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = max(self._trainer.settings.lease_s / 3, 0.5)
        while not self._stop.wait(interval):
            try:
                self._trainer.renew_lease()
                self._trainer.refresh_cancel_flag()
            except Exception as exc:  # the database may be briefly away; try again later
                logger.warning("run %s: lease renewal failed: %s", self._trainer.run_id, exc)
