"""The ORM models on a migrated database, SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.data import from_npz_bytes, parse_json, sha256_hex, to_npz_bytes
from core.db.models import (
    Checkpoint,
    Dataset,
    MetricRow,
    ModelArtifact,
    Run,
    RunStatus,
    as_utc,
)
from core.db.session import get_sessionmaker, session_scope

SPEC = {"input_dim": 2, "layers": [{"units": 1, "activation": "sigmoid"}]}
TRAINING = {"loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 0.5}, "epochs": 3}


def _dataset(session: Session) -> Dataset:
    parsed = parse_json([[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 0], max_cells=100)
    blob = to_npz_bytes(parsed)
    ds = Dataset(
        name="xor",
        n_samples=parsed.n_samples,
        n_features=parsed.n_features,
        n_targets=parsed.n_targets,
        task=parsed.task,
        classes=parsed.classes,
        sha256=sha256_hex(blob),
        size_bytes=len(blob),
        data=blob,
    )
    session.add(ds)
    session.flush()
    return ds


def _run(session: Session, dataset_id: str) -> Run:
    run = Run(name="r", dataset_id=dataset_id, network=SPEC, training=TRAINING, epochs=3)
    session.add(run)
    session.flush()
    return run


def test_dataset_round_trip(db_url: str) -> None:
    with session_scope(db_url) as s:
        ds_id = _dataset(s).id
    with session_scope(db_url) as s:
        ds = s.get(Dataset, ds_id)
        assert ds is not None
        assert (ds.name, ds.n_samples, ds.n_features, ds.n_targets) == ("xor", 4, 2, 1)
        assert ds.task == "regression" and ds.classes is None
        assert ds.owner == "default"
        assert len(ds.sha256) == 64 and ds.size_bytes == len(ds.data)
        loaded = from_npz_bytes(ds.data)
        np.testing.assert_array_equal(loaded.y[:, 0], [0, 1, 1, 0])
        created = as_utc(ds.created_at)
        assert created is not None and abs(datetime.now(UTC) - created) < timedelta(minutes=5)


def test_json_classes_are_stored_as_lists(db_url: str) -> None:
    with session_scope(db_url) as s:
        ds = _dataset(s)
        ds.task, ds.classes = "classification", ["cat", "dog", 3]
        ds_id = ds.id
    with session_scope(db_url) as s:
        assert s.get(Dataset, ds_id).classes == ["cat", "dog", 3]  # type: ignore[union-attr]


def test_run_defaults_and_json_columns(db_url: str) -> None:
    with session_scope(db_url) as s:
        run_id = _run(s, _dataset(s).id).id
    with session_scope(db_url) as s:
        run = s.get(Run, run_id)
        assert run is not None
        assert run.status == RunStatus.queued == "queued"
        assert (run.epoch, run.epochs, run.attempts) == (0, 3, 0)
        assert run.cancel_requested is False
        assert run.metrics == {}
        assert run.network == SPEC and run.training == TRAINING
        assert run.started_at is None and run.finished_at is None and run.error is None


def test_metric_rows_come_back_in_epoch_order(db_url: str) -> None:
    with session_scope(db_url) as s:
        run_id = _run(s, _dataset(s).id).id
        for epoch in (2, 1, 3):
            s.add(MetricRow(run_id=run_id, epoch=epoch, loss=1.0 / epoch, elapsed_s=0.1 * epoch))
        s.add(MetricRow(run_id=run_id, epoch=4, loss=0.2, val_loss=0.3, elapsed_s=0.4))
    with session_scope(db_url) as s:
        rows = s.scalars(select(MetricRow).where(MetricRow.run_id == run_id).order_by("epoch"))
        items = [r.as_item() for r in rows]
    assert [i["epoch"] for i in items] == [1, 2, 3, 4]
    assert items[1] == {"epoch": 2, "loss": 0.5, "elapsed_s": pytest.approx(0.2)}
    assert items[3]["val_loss"] == 0.3 and "accuracy" not in items[3]


def test_duplicate_epoch_is_rejected(db_url: str) -> None:
    with session_scope(db_url) as s:
        run_id = _run(s, _dataset(s).id).id
        s.add(MetricRow(run_id=run_id, epoch=1, loss=1.0, elapsed_s=0.1))
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as s:
            s.add(MetricRow(run_id=run_id, epoch=1, loss=0.5, elapsed_s=0.2))
    with session_scope(db_url) as s:
        count = s.scalar(select(func.count()).select_from(MetricRow))
        assert count == 1


def test_metric_of_unknown_run_is_rejected(db_url: str) -> None:
    # Foreign keys are enforced on SQLite too (the engine turns the pragma on).
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as s:
            s.add(MetricRow(run_id="no-such-run", epoch=1, loss=1.0, elapsed_s=0.1))


def test_checkpoint_and_model_round_trip(db_url: str) -> None:
    payload = bytes(range(256)) * 40
    with session_scope(db_url) as s:
        run_id = _run(s, _dataset(s).id).id
        s.add(Checkpoint(run_id=run_id, epoch=2, data=payload))
        s.add(ModelArtifact(run_id=run_id, data=payload[::-1]))
    with session_scope(db_url) as s:
        ckpt = s.get(Checkpoint, run_id)
        model = s.get(ModelArtifact, run_id)
        assert ckpt is not None and ckpt.epoch == 2 and ckpt.data == payload
        assert model is not None and model.data == payload[::-1]
    # One checkpoint per run: a second insert for the same run conflicts.
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as s:
            s.add(Checkpoint(run_id=run_id, epoch=3, data=b"x"))


@pytest.mark.parametrize("how", ["orm", "core"])
def test_deleting_a_run_cascades_to_its_rows(db_url: str, how: str) -> None:
    with session_scope(db_url) as s:
        ds_id = _dataset(s).id
        doomed, kept = _run(s, ds_id).id, _run(s, ds_id).id
        for run_id in (doomed, kept):
            s.add_all([MetricRow(run_id=run_id, epoch=e, loss=1.0, elapsed_s=0.0) for e in (1, 2)])
            s.add(Checkpoint(run_id=run_id, epoch=2, data=b"ckpt"))
            s.add(ModelArtifact(run_id=run_id, data=b"model"))
    with session_scope(db_url) as s:
        if how == "orm":
            s.delete(s.get(Run, doomed))
        else:
            s.execute(delete(Run).where(Run.id == doomed))
    with session_scope(db_url) as s:
        for model in (MetricRow, Checkpoint, ModelArtifact):
            remaining = set(s.scalars(select(model.run_id)))
            assert remaining == {kept}, model.__name__
        assert s.get(Run, doomed) is None
        assert s.get(Dataset, ds_id) is not None


def test_timestamps_are_utc_aware_after_as_utc(db_url: str) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with session_scope(db_url) as s:
        run = _run(s, _dataset(s).id)
        run.started_at = moment
        run_id = run.id
    session = get_sessionmaker(db_url)()
    try:
        run = session.get(Run, run_id)
        assert run is not None and as_utc(run.started_at) == moment
    finally:
        session.close()
