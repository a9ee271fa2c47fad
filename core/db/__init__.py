"""Storage: SQLAlchemy 2.0 models of datasets, runs, metrics, checkpoints and models."""

from core.db.models import Base, Checkpoint, Dataset, MetricRow, ModelArtifact, Run, RunStatus
from core.db.session import get_engine, get_sessionmaker, normalize_url, session_scope

__all__ = [
    "Base",
    "Checkpoint",
    "Dataset",
    "MetricRow",
    "ModelArtifact",
    "Run",
    "RunStatus",
    "get_engine",
    "get_sessionmaker",
    "normalize_url",
    "session_scope",
]
