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
from typing import Any, TypeVar, cast

import redis
from sqlalchemy import Connection, CursorResult, Executable, Table, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from core.data import ParsedDataset, from_npz_bytes
from core.db.models import Checkpoint, MetricRow, ModelArtifact, utcnow
from core.db.session import (
    TRANSIENT_ERRORS,
    get_autocommit_engine,
    get_engine,
    retry_transient,
)
from core.dispatch import freed, request_dispatch
from core.engine import EngineError, Network, load_model
from core.engine.targets import CROSS_ENTROPY
from core.engine.training import held_out_rows, validation_rows, validation_size
from core.runs import lifecycle
from core.runs.lifecycle import Change
from core.runs.sweeps import PruneCheck, Standing
from core.scoring import score
from core.settings import Settings, get_settings
from core.spec import NetworkSpec, TrainingConfig
from core.streams import EVENT_METRIC, EventPublisher, Publisher
from core.telemetry import epoch_increments
from workers.lifecycle import handback_requested

logger = logging.getLogger(__name__)

T = TypeVar("T")


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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


# The per-epoch metric insert, built once: its values are parameters, so SQLAlchemy
# compiles it a single time instead of once per epoch. (SQLAlchemy types a mapped class's
# __table__ as FromClause; a declarative class has a Table.)
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
        self._stop_reason: str | None = None  # runs.stop_reason of a stop request
        self._prune_check = PruneCheck(run_id, sweep_id=None)
        self._waiting: Standing | None = None  # ASHA: it waits at this rung (pauses)
        self._sweep_id: str | None = None
        self._claim_change: Change | None = None
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

    def _tx(self, what: str, body: Callable[[Connection], T]) -> T:
        """Run ``body`` in a transaction of its own, retried while the database is away."""

        def attempt() -> T:
            with get_engine().begin() as conn:
                return body(conn)

        return retry_transient(
            attempt, give_up_after_s=self.settings.db_retry_s, what=f"{what} run {self.run_id}"
        )

    def _atomic(self, what: str, body: Callable[[Connection], T]) -> T:
        """A status change (``core.runs.lifecycle``) and what goes with it: statement by
        statement on PostgreSQL, where each transition is one statement (its timeline row
        included) and the steps are ordered to be safe to stop between; in a transaction
        elsewhere (SQLite, where a transition is two statements and a transaction costs no
        round trips)."""
        if get_engine().dialect.name == "postgresql":
            return self._single(what, body)
        return self._tx(what, body)

    def _single(self, what: str, body: Callable[[Connection], T]) -> T:
        """Run ``body``'s statements each on its own (autocommit), retried while the
        database is away: one round trip per statement, no BEGIN/COMMIT. Only for steps
        whose statements are safe one by one (see ``_on_epoch``)."""

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
        is marked failed instead of tried again) or ``("not claimable", None)``. The change
        it made waits in ``self._claim_change`` to be announced.
        """

        def body(conn: Connection) -> tuple[lifecycle.Claim, _Job | None]:
            claimed = lifecycle.claim(
                conn, self.run_id, worker=self.me, lease_s=self.settings.lease_s,
                max_attempts=self.settings.max_attempts,
            )  # fmt: skip
            row = claimed.row
            if row is None:
                return claimed, None
            job = _Job(row.network, row.training, row.data, row.classes, row.dataset_id)
            if row.epoch > 0:  # an earlier attempt trained: it left metrics, maybe a checkpoint
                checkpoint = conn.execute(
                    select(Checkpoint.epoch, Checkpoint.data).where(
                        Checkpoint.run_id == self.run_id
                    )
                ).first()
                if checkpoint is not None:
                    job.checkpoint_epoch, job.checkpoint = checkpoint[0], checkpoint[1]
                job.recorded_epochs = (
                    conn.scalar(
                        select(func.max(MetricRow.epoch)).where(MetricRow.run_id == self.run_id)
                    )
                    or 0
                )
            return claimed, job

        claimed, job = self._atomic("claiming", body)
        self._claim_change = claimed.change
        if claimed.change is not None:
            self._sweep_id = claimed.change.sweep_id
        return claimed.outcome, job

    # -- the whole job --------------------------------------------------------------
    def run(self) -> str | None:
        """Train the run to its end; returns the terminal status, or None if not ours."""
        outcome, job = self.claim()
        if outcome in ("cancelled", "gave up"):
            assert self._claim_change is not None
            logger.info("run %s ended at its claim: %s", self.run_id, self._claim_change.reason)
            lifecycle.announce([self._claim_change], self.events)
            return self._claim_change.status.value
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
        self._prune_check = PruneCheck(self.run_id, sweep_id=self._sweep_id)
        lifecycle.announce([self._claim_change], self.events)  # the status event: running

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
            kept, _ = held_out_rows(data.n_samples, config)
            self._train_samples = kept.size - validation_size(kept.size, config)
            net = Network.from_spec(spec, seed=config.seed)
            net.classes = classes
            if config.warm_start is not None and resume is None:
                self._warm_start(net, config.warm_start.run_id)
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
            return self._finish(self._ending(lifecycle.fail, error=str(exc)))
        except Exception as exc:  # a bug must not take the worker down with it
            logger.exception("run %s failed unexpectedly", self.run_id)
            error = f"internal error: {type(exc).__name__}: {exc}"
            return self._finish(self._ending(lifecycle.fail, error=error))

        last_epoch = history[-1]["epoch"] if history else 0
        interrupted = (
            self._stopped_at is not None
            and bool(history)
            and (last_epoch == self._stopped_at and self._stopped_at < config.epochs)
        )
        if not interrupted:
            es = config.early_stopping
            restored = es is not None and es.restore_best
            test_metrics, more = _final_scores(net, data, config, classes)
            return self._finish(self._ending(
                lifecycle.succeed, epochs=config.epochs, last_epoch=last_epoch,
                best_epoch=net.weights_epoch if restored else None,
                test_metrics=test_metrics, more_metrics=more,
            ), model=_Model(net.save(), net.weights_epoch or last_epoch))  # fmt: skip
        assert self._stopped_at is not None
        if self._cancel:
            reason = lifecycle.stop_reason_text(self._stop_reason, after_epoch=self._stopped_at)
            # It keeps what it learned: the weights of the epoch it stopped at, as a
            # partial model (downloadable, usable for predict and warm starts).
            partial = _Model(net.save(), self._stopped_at, partial=True)
            return self._finish(self._ending(lifecycle.stop, reason=reason), model=partial)
        if self._runtime_exceeded:
            return self._finish(self._ending(
                lifecycle.expire, max_runtime_s=config.max_runtime_s, epoch=self._stopped_at,
            ))  # fmt: skip
        if self._waiting is not None:
            self._pause(self._waiting, _Model(net.save(), self._stopped_at, partial=True))
            return None
        self._hand_back()
        return None

    def _warm_start(self, net: Network, parent_id: str) -> None:
        """Start ``net`` from the stored model of run ``parent_id``: its weights and its
        standardisation (the API checked the shapes when the run was submitted)."""
        blob = self._single(
            "loading the warm start of",
            lambda conn: conn.scalar(
                select(ModelArtifact.data).where(ModelArtifact.run_id == parent_id)
            ),
        )
        if blob is None:
            raise EngineError(f"warm start: run {parent_id} no longer has a stored model")
        parent = load_model(blob)
        net.weights = parent.weights
        net.x_mean, net.x_std = parent.x_mean, parent.x_std

    # -- engine callbacks -----------------------------------------------------------
    def _on_epoch(self, item: dict[str, Any]) -> None:
        item = {k: (float(v) if k != "epoch" else int(v)) for k, v in item.items()}
        epoch = self._last_epoch = item["epoch"]
        latest = {k: v for k, v in item.items() if k not in ("epoch", "elapsed_s")}

        def record(s: Connection) -> lifecycle.EpochRecorded:
            # Two statements, each atomic on its own. Progress first: it also proves we
            # still hold the lease. Should we die between the two, the next attempt finds
            # this epoch's metric missing and records it when it trains the epoch again.
            recorded = lifecycle.record_epoch(
                s, self.run_id, worker=self.me, epoch=epoch, metrics=latest,
                lease_s=self.settings.lease_s,
            )  # fmt: skip
            if recorded is None:
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
            return recorded

        metric_row = {
            "run_id": self.run_id,
            "epoch": epoch,
            "loss": item["loss"],
            "val_loss": item.get("val_loss"),
            "accuracy": item.get("accuracy"),
            "val_accuracy": item.get("val_accuracy"),
            "elapsed_s": item["elapsed_s"],
        }
        self._note_stop_request(self._single(f"recording epoch {epoch}", record))
        # elapsed_s counts from the start of the fit (carried across a resume).
        seconds = max(item["elapsed_s"] - self._last_elapsed, 0.0)
        self._last_elapsed = item["elapsed_s"]
        self.events.publish(
            self.run_id, EVENT_METRIC, item,
            telemetry=epoch_increments(seconds, self._train_samples),
        )  # fmt: skip

    def _note_stop_request(self, request: lifecycle.EpochRecorded) -> None:
        if request.cancel_requested and not self._cancel:
            self._cancel, self._stop_reason = True, request.stop_reason

    def _checkpoint_due(self, epoch: int) -> bool:
        """Asked by the engine after every epoch; only a due checkpoint is serialised."""
        # Read the shutdown flag and the clock once per epoch, here: when we stop for
        # either, the checkpoint of this very epoch is stored.
        self._handing_back = handback_requested()
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._runtime_exceeded = True
        if not self._cancel and self._waiting is None:
            # A rung where this trial is not among the best yet: it waits there, resuming
            # from this epoch's checkpoint if its sweep promotes it.
            self._waiting = self._prune_check(epoch)
            if self._waiting is not None:
                return True
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
        def tx(conn: Connection) -> None:
            values = {"epoch": epoch, "data": data, "created_at": utcnow()}
            replaced = conn.execute(
                update(Checkpoint).where(Checkpoint.run_id == self.run_id).values(**values)
            )
            if not cast(CursorResult[Any], replaced).rowcount:
                conn.execute(insert(Checkpoint).values(run_id=self.run_id, **values))

        self._tx(f"checkpointing epoch {epoch}", tx)
        self._last_checkpoint = (epoch, time.monotonic())
        self._has_checkpoint = True

    def _should_stop(self) -> bool:
        stop = self._cancel or self._runtime_exceeded or self._handing_back
        if stop or self._waiting is not None:
            self._stopped_at = self._last_epoch
            return True
        return False

    # -- outcome --------------------------------------------------------------------
    def _ending(self, transition: Callable[..., Change | None], **kwargs: Any) -> _Ending:
        """``transition`` (succeed, fail, stop, expire) of this run, for :meth:`_finish`."""

        def end(conn: Connection) -> Change | None:
            return transition(conn, self.run_id, worker=self.me,
                              drop_checkpoint=self._has_checkpoint, **kwargs)  # fmt: skip

        return end

    def _finish(self, end: _Ending, *, model: _Model | None = None) -> str:
        # The next run is chosen and sent while we write our last statements.
        request_dispatch(freeing=self.run_id)

        def record(conn: Connection) -> Change:
            # In an order that is safe to stop anywhere (see _atomic): the model (a
            # retrained run stores the same bytes: a second copy is ignored), then the
            # status, guarded by the lease, with its timeline row, then the checkpoint's
            # removal.
            if model is not None:
                conn.execute(_insert_ignoring_duplicate(conn, self.run_id, model))
            change = end(conn)
            if change is None:
                raise LeaseLost(self.run_id)
            return change

        try:
            change = self._atomic("recording the end of", record)
        except BaseException:
            freed(self.run_id)  # not ours to end after all: its slot is not freeing
            raise
        lifecycle.announce([change], self.events, slot_announced=True)
        logger.info("run %s %s: %s", self.run_id, change.status.value, change.reason)
        return change.status.value

    def _hand_back(self) -> None:
        """Our worker is shutting down: re-queue the run to resume from its checkpoint."""
        checkpoint_epoch = self._last_checkpoint[0] if self._has_checkpoint else 0
        change = self._tx("handing back", lambda conn: lifecycle.hand_back(
            conn, self.run_id, worker=self.me, checkpoint_epoch=checkpoint_epoch
        ))  # fmt: skip
        if change is None:
            raise LeaseLost(self.run_id)
        lifecycle.announce([change], self.events)
        logger.info("run %s: %s", self.run_id, change.reason)

    def _pause(self, where: Standing, model: _Model) -> None:
        """ASHA: wait at the rung (re-queued, held by its sweep) with this epoch's checkpoint;
        the weights it has are its model while it waits (the sweep drops them if it goes
        on)."""

        def record(conn: Connection) -> Change | None:
            conn.execute(_insert_ignoring_duplicate(conn, self.run_id, model))
            return lifecycle.pause(
                conn, self.run_id, worker=self.me, epoch=where.epoch,
                details=where.details(), reason=where.waiting(),
            )  # fmt: skip

        change = self._tx("pausing", record)
        if change is None:
            raise LeaseLost(self.run_id)
        lifecycle.announce([change], self.events)
        logger.info("run %s: %s", self.run_id, change.reason)

    def renew_lease(self) -> bool:
        with get_autocommit_engine().connect() as conn:
            return lifecycle.renew_lease(
                conn, self.run_id, worker=self.me, lease_s=self.settings.lease_s
            )

    def refresh_cancel_flag(self) -> None:
        with get_autocommit_engine().connect() as conn:
            self._note_stop_request(lifecycle.stop_requested(conn, self.run_id))


_Ending = Callable[[Connection], Change | None]


def _final_scores(
    net: Network, data: ParsedDataset, config: TrainingConfig, classes: list[Any] | None
) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """The trained model's scores at the end: on the rows ``test_split`` held out (its
    ``test_metrics``, or None without a test split), and, for a regression with validation
    rows, ``val_mae`` and ``val_r2`` to add to its metrics. Rows come from the engine's own
    split functions: never recomputed here."""
    kept, held_out = held_out_rows(data.n_samples, config)
    test_metrics = None
    if held_out.size:
        test_metrics, _ = score(net, data.X[held_out], data.y[held_out], config.loss, classes)
    more: dict[str, float] = {}
    if config.loss not in CROSS_ENTROPY:
        _, val = validation_rows(kept.size, config)
        if val.size:
            rows = kept[val]
            figures, _ = score(net, data.X[rows], data.y[rows], config.loss, classes)
            more = {"val_mae": figures["mae"]}
            if figures["r2"] is not None:
                more["val_r2"] = figures["r2"]
    return test_metrics, more


@dataclass
class _Model:
    """A model to store as a run ends: artifact bytes, the epoch of its weights, and
    whether the run stopped before its end (a cancelled run's weights)."""

    data: bytes
    epoch: int
    partial: bool = False


def _insert_ignoring_duplicate(conn: Connection, run_id: str, model: _Model) -> Executable:
    """INSERT of the run's model that does nothing if it is stored already (PostgreSQL and
    SQLite both say ON CONFLICT DO NOTHING)."""
    dialect_insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    values = {"run_id": run_id, "data": model.data, "epoch": model.epoch,
              "partial": model.partial}  # fmt: skip
    return dialect_insert(ModelArtifact).values(**values).on_conflict_do_nothing()


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
