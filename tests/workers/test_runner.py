"""The run lifecycle inside a worker, without Celery: ``RunTrainer`` and ``reclaim`` called
in-process against SQLite and PostgreSQL, with a publisher that records the events.

What happens between epochs (a cancel, a lost lease, a shutdown) is made to happen from the
recording publisher, which the trainer calls after each recorded epoch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from core.data import parse_json, to_npz_bytes
from core.db.models import (
    Checkpoint,
    Dataset,
    MetricRow,
    ModelArtifact,
    Run,
    RunStatus,
    RunTransition,
    utcnow,
)
from core.db.session import session_scope
from core.engine import Network
from core.settings import Settings
from workers import lifecycle
from workers.lifecycle import reclaim
from workers.runner import RunTrainer

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"
NETWORK: dict[str, Any] = json.loads((SEED / "network.json").read_text())
X = np.random.default_rng(5).uniform(-1, 1, size=(16, 2))
Y = 1 / (1 + np.exp(-X[:, ::-1] * 2))
TRAINING: dict[str, Any] = {
    "loss": "mse",
    "optimizer": {"name": "sgd", "learning_rate": 0.5, "momentum": 0.9},
    "epochs": 40,
    "batch_size": 4,
    "shuffle": True,
    "seed": 11,
    "dtype": "float64",
}


class Recorder:
    """A publisher that records events and runs ``on_metric(epoch)`` after each epoch."""

    def __init__(self, on_metric: Callable[[int], None] | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any], bool]] = []
        self.on_metric = on_metric

    def publish(self, run_id: str, event: str, data: dict[str, Any], *, final: bool = False,
                telemetry: dict[str, float] | None = None) -> bool:  # fmt: skip
        self.events.append((event, dict(data), final))
        if event == "metric" and self.on_metric is not None:
            self.on_metric(int(data["epoch"]))
        return True

    def statuses(self) -> list[str]:
        return [data["status"] for event, data, _ in self.events if event == "status"]


def _new_run(
    training: dict[str, Any] | None = None, network: dict[str, Any] | None = None, **columns: Any
) -> str:
    parsed = parse_json(X.tolist(), Y.tolist(), max_cells=10_000)
    with session_scope() as s:
        ds = Dataset(owner="me", name="d", n_samples=parsed.n_samples,
                     n_features=parsed.n_features, n_targets=parsed.n_targets,
                     task=parsed.task, classes=parsed.classes, sha256="0", size_bytes=1,
                     data=to_npz_bytes(parsed))  # fmt: skip
        s.add(ds)
        s.flush()
        cfg = {**TRAINING, **(training or {})}
        columns = {"status": RunStatus.queued.value, **columns}
        run = Run(owner="me", dataset_id=ds.id, network=network or NETWORK, training=cfg,
                  epochs=cfg["epochs"], metrics={}, **columns)  # fmt: skip
        s.add(run)
        s.flush()
        return run.id


def _run(run_id: str) -> Run:
    with session_scope() as s:
        run = s.get(Run, run_id)
        assert run is not None
        s.expunge(run)
        return run


def _set(run_id: str, **values: Any) -> None:
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == run_id).values(**values))


def _epochs(run_id: str) -> list[int]:
    with session_scope() as s:
        return list(
            s.scalars(select(MetricRow.epoch).where(MetricRow.run_id == run_id).order_by("epoch"))
        )


def _timeline(run_id: str) -> list[tuple[str, str, int, str | None]]:
    """The run's transitions as stored: (status, reason, attempt, worker), in order."""
    with session_scope() as s:
        rows = s.execute(
            select(RunTransition.status, RunTransition.reason, RunTransition.attempt,
                   RunTransition.worker)
            .where(RunTransition.run_id == run_id)
            .order_by(RunTransition.id)
        )  # fmt: skip
        return [tuple(row) for row in rows]  # type: ignore[misc]


def _trainer(run_id: str, recorder: Recorder, worker: str = "host:1") -> RunTrainer:
    return RunTrainer(run_id, owner=worker, events=recorder)


def _reference(training: dict[str, Any] | None = None) -> Network:
    net = Network.from_spec(NETWORK, seed=TRAINING["seed"])
    net.fit(X, Y, {**TRAINING, **(training or {})})
    return net


def _stored_weights(run_id: str) -> list[dict[str, np.ndarray]]:
    with session_scope() as s:
        blob = s.scalar(select(ModelArtifact.data).where(ModelArtifact.run_id == run_id))
    assert blob is not None
    return Network.load(blob).weights


def test_a_run_is_claimed_trained_and_recorded(service_settings: Settings) -> None:
    run_id = _new_run()
    recorder = Recorder()
    assert _trainer(run_id, recorder).run() == "succeeded"
    run = _run(run_id)
    assert (run.status, run.attempts, run.epoch, run.lease_owner) == ("succeeded", 1, 40, None)
    assert run.started_at is not None and run.finished_at is not None
    assert _epochs(run_id) == list(range(1, 41))
    assert recorder.statuses() == ["running", "succeeded"] and recorder.events[-1][2] is True
    assert _timeline(run_id) == [
        ("running", "claimed by worker host:1 (attempt 1)", 1, "host:1"),
        ("succeeded", "trained all 40 epochs", 1, "host:1"),
    ]
    # The status events carry the same reasons.
    reasons = [data["reason"] for event, data, _ in recorder.events if event == "status"]
    assert reasons == [reason for _, reason, _, _ in _timeline(run_id)]
    for got, want in zip(_stored_weights(run_id), _reference().weights, strict=True):
        np.testing.assert_array_equal(got["W"], want["W"])
    with session_scope() as s:  # no checkpoint is left behind
        assert s.get(Checkpoint, run_id) is None


def test_a_duplicate_delivery_does_nothing(service_settings: Settings) -> None:
    run_id = _new_run()
    assert _trainer(run_id, Recorder()).run() == "succeeded"
    again = Recorder()
    assert _trainer(run_id, again, worker="host:2").run() is None
    assert again.events == [] and _run(run_id).attempts == 1
    assert [status for status, *_ in _timeline(run_id)] == ["running", "succeeded"]
    # Nor is a run that another worker holds under a live lease taken over.
    live = _new_run(status=RunStatus.running.value, lease_owner="host:9",
                    lease_expires_at=utcnow() + timedelta(seconds=60), attempts=1)  # fmt: skip
    assert _trainer(live, Recorder()).run() is None
    assert (_run(live).lease_owner, _run(live).attempts) == ("host:9", 1)


def test_a_cancel_asked_while_training_stops_the_run(service_settings: Settings) -> None:
    run_id = _new_run()
    recorder = Recorder(lambda epoch: epoch == 5 and _set(run_id, cancel_requested=True))
    assert _trainer(run_id, recorder).run() == "cancelled"
    # The flag is read with the next epoch's record, which stops training after it.
    assert _epochs(run_id) == list(range(1, 7))
    assert _run(run_id).status == "cancelled" and recorder.statuses()[-1] == "cancelled"
    assert _timeline(run_id)[-1] == (
        "cancelled",
        "cancelled by its owner; stopped after epoch 6",
        1,
        "host:1",
    )


def test_a_run_cancelled_while_no_worker_held_it_ends_at_its_claim(
    service_settings: Settings,
) -> None:
    run_id = _new_run(cancel_requested=True)
    recorder = Recorder()
    assert _trainer(run_id, recorder).run() == "cancelled"
    assert _epochs(run_id) == [] and _run(run_id).attempts == 0
    assert _timeline(run_id) == [("cancelled", "cancelled by its owner", 0, None)]
    assert recorder.events == [
        ("status", {"status": "cancelled", "reason": "cancelled by its owner"}, True)
    ]


def test_a_worker_that_lost_its_lease_stops_touching_the_run(service_settings: Settings) -> None:
    run_id = _new_run()
    recorder = Recorder(lambda epoch: epoch == 3 and _set(run_id, lease_owner="host:2"))
    assert _trainer(run_id, recorder).run() is None
    run = _run(run_id)
    assert (run.status, run.lease_owner) == ("running", "host:2")
    assert _epochs(run_id) == [1, 2, 3]  # epoch 4's record found the lease gone
    assert "succeeded" not in recorder.statuses()
    assert [status for status, *_ in _timeline(run_id)] == ["running"]


def test_a_hand_back_resumes_elsewhere_bit_for_bit(service_settings: Settings) -> None:
    run_id = _new_run()
    recorder = Recorder(lambda epoch: epoch == 17 and lifecycle._handback.set())
    try:
        assert _trainer(run_id, recorder).run() is None
    finally:
        lifecycle._handback.clear()
    run = _run(run_id)
    # The shutdown was noticed right after epoch 17: back in the queue, unsent, with no
    # attempt charged, and a checkpoint of that very epoch.
    assert (run.status, run.attempts, run.lease_owner) == ("queued", 0, None)
    assert run.enqueued_at is None
    with session_scope() as s:
        checkpoint = s.get(Checkpoint, run_id)
        assert checkpoint is not None and checkpoint.epoch == 17
    assert _trainer(run_id, Recorder(), worker="host:2").run() == "succeeded"
    assert _epochs(run_id) == list(range(1, 41)) and _run(run_id).attempts == 1
    assert _timeline(run_id) == [
        ("running", "claimed by worker host:1 (attempt 1)", 1, "host:1"),
        ("queued", "handed back at worker shutdown; resumes from epoch 18", 0, "host:1"),
        ("running", "claimed by worker host:2 (attempt 1)", 1, "host:2"),
        ("succeeded", "trained all 40 epochs", 1, "host:2"),
    ]
    for got, want in zip(_stored_weights(run_id), _reference().weights, strict=True):
        np.testing.assert_array_equal(got["W"], want["W"])
        np.testing.assert_array_equal(got["b"], want["b"])


def test_reclaim_requeues_a_run_whose_lease_expired(service_settings: Settings) -> None:
    expired = _new_run(status=RunStatus.running.value, lease_owner="host:dead", attempts=1,
                       lease_expires_at=utcnow() - timedelta(seconds=1))  # fmt: skip
    alive = _new_run(status=RunStatus.running.value, lease_owner="host:alive", attempts=1,
                     lease_expires_at=utcnow() + timedelta(seconds=60))  # fmt: skip
    assert reclaim() == [expired]
    run = _run(expired)
    assert (run.status, run.lease_owner, run.enqueued_at) == ("queued", None, None)
    assert _run(alive).status == "running"
    assert _trainer(expired, Recorder()).run() == "succeeded"
    assert _run(expired).attempts == 2
    assert _timeline(expired)[:2] == [
        ("queued", "lease expired; re-queued (worker host:dead stopped renewing it)", 1,
         "host:dead"),
        ("running", "claimed by worker host:1 (attempt 2)", 2, "host:1"),
    ]  # fmt: skip
    assert _timeline(alive) == []


def test_a_run_whose_workers_keep_dying_ends_failed(service_settings: Settings) -> None:
    attempts = service_settings.max_attempts
    run_id = _new_run(
        status=RunStatus.running.value, lease_owner="host:dead", attempts=attempts,
        lease_expires_at=utcnow() - timedelta(seconds=1),
    )  # fmt: skip
    recorder = Recorder()
    assert _trainer(run_id, recorder).run() == "failed"
    run = _run(run_id)
    assert run.status == "failed" and f"gave up after {attempts} attempts" in (run.error or "")
    assert recorder.statuses() == ["failed"]
    [(status, reason, attempt, worker)] = _timeline(run_id)
    assert (status, reason, attempt, worker) == ("failed", run.error, attempts, None)


def test_a_diverging_run_fails_naming_the_epoch(service_settings: Settings) -> None:
    linear = {"input_dim": 2, "layers": [{"units": 8, "activation": "relu"},
                                         {"units": 2, "activation": "identity"}]}  # fmt: skip
    run_id = _new_run({"optimizer": {"name": "sgd", "learning_rate": 1e3}}, network=linear)
    assert _trainer(run_id, Recorder()).run() == "failed"
    error = _run(run_id).error or ""
    assert "diverged" in error and "epoch" in error
    assert _timeline(run_id)[-1] == ("failed", error, 1, "host:1")


def test_a_run_past_its_max_runtime_fails_saying_so(service_settings: Settings) -> None:
    run_id = _new_run({"max_runtime_s": 1e-6})
    assert _trainer(run_id, Recorder()).run() == "failed"
    run = _run(run_id)
    # The clock is read after each epoch: the first one already ran past the deadline.
    assert _epochs(run_id) == [1]
    assert run.error == "exceeded max runtime of 1e-06 s at epoch 1"
    assert _timeline(run_id)[-1] == ("failed", run.error, 1, "host:1")


@pytest.mark.parametrize("restore_best", [False, True])
def test_early_stopping_ends_the_run_early_and_succeeds(
    service_settings: Settings, restore_best: bool
) -> None:
    early = {"patience": 3, "min_delta": 0.05, "restore_best": restore_best}
    training = {"epochs": 400, "validation_split": 0.25, "early_stopping": early}
    run_id = _new_run(training)
    assert _trainer(run_id, Recorder()).run() == "succeeded"
    epochs = _epochs(run_id)
    reference = _reference(training)
    assert 3 < len(epochs) < 400 and epochs == list(range(1, len(epochs) + 1))
    for got, want in zip(_stored_weights(run_id), reference.weights, strict=True):
        np.testing.assert_array_equal(got["W"], want["W"])
    run = _run(run_id)
    assert run.stop_reason == "early_stopped"
    if not restore_best:
        assert run.best_epoch is None and run.last_epoch_metrics is None
        assert _timeline(run_id)[-1] == (
            "succeeded", f"early stopped at epoch {len(epochs)} of 400", 1, "host:1"
        )  # fmt: skip
        return
    # The model is the best epoch's: bit for bit a run of that many epochs without early
    # stopping, and the record's metrics are that epoch's, the last ones kept apart.
    best = run.best_epoch
    assert best is not None and best < len(epochs)
    plain = _reference({"epochs": best, "validation_split": 0.25})
    for got, want in zip(_stored_weights(run_id), plain.weights, strict=True):
        np.testing.assert_array_equal(got["W"], want["W"])
        np.testing.assert_array_equal(got["b"], want["b"])
    with session_scope() as s:
        stored = s.scalars(select(MetricRow).where(MetricRow.run_id == run_id))
        rows = {row.epoch: row.as_item() for row in stored}

    def metrics(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k not in ("epoch", "elapsed_s")}

    # (a regression with validation rows: its model's MAE and R² on them join its metrics)
    assert {k: v for k, v in run.metrics.items() if k not in ("val_mae", "val_r2")} == (
        metrics(rows[best])
    )
    assert {"val_mae", "val_r2"} <= set(run.metrics)
    assert run.last_epoch_metrics == metrics(rows[len(epochs)])
    # The best epoch by the rule, derived here: the last that beat the best by min_delta.
    lowest, derived = float("inf"), 0
    for epoch in sorted(rows):
        if rows[epoch]["val_loss"] < lowest - early["min_delta"]:
            lowest, derived = rows[epoch]["val_loss"], epoch
    assert best == derived
    assert _timeline(run_id)[-1] == (
        "succeeded",
        f"early stopped at epoch {len(epochs)} of 400; kept the weights of epoch {best}",
        1,
        "host:1",
    )


def test_a_test_split_is_scored_once_at_the_end_and_regressions_report_mae_and_r2(
    service_settings: Settings,
) -> None:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    from core.engine.training import held_out_rows, validation_rows
    from core.spec import TrainingConfig

    training = {"validation_split": 0.25, "test_split": 0.25}
    run_id = _new_run(training)
    assert _trainer(run_id, Recorder()).run() == "succeeded"
    run = _run(run_id)
    model = Network.from_spec(NETWORK, seed=0)
    model.weights = _stored_weights(run_id)
    cfg = TrainingConfig.model_validate({**TRAINING, **training})
    kept, held_out = held_out_rows(len(X), cfg)
    assert held_out.size == 4 and run.test_metrics is not None
    got = model.predict(X[held_out])
    test = run.test_metrics
    assert test["task"] == "regression" and test["n_samples"] == 4
    assert test["mse"] == pytest.approx(mean_squared_error(Y[held_out], got), rel=1e-12)
    assert test["mae"] == pytest.approx(mean_absolute_error(Y[held_out], got), rel=1e-12)
    assert test["r2"] == pytest.approx(r2_score(Y[held_out], got), rel=1e-12)
    # MAE and R² on the validation rows join the model's metrics.
    _, val = validation_rows(kept.size, cfg)
    rows = kept[val]
    on_val = model.predict(X[rows])
    assert run.metrics["val_mae"] == pytest.approx(mean_absolute_error(Y[rows], on_val), rel=1e-12)
    assert run.metrics["val_r2"] == pytest.approx(r2_score(Y[rows], on_val), rel=1e-12)
    # The samples it trained on exclude both held-out parts.
    assert set(rows).isdisjoint(held_out)
