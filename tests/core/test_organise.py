"""core/organise.py: the rule of names, tags and notes, and its edits on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, pool, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from core import organise
from core.db.models import Dataset, Run, RunTransition, Sweep
from core.db.session import normalize_url
from core.organise import UNSET, Edit, EditError, apply, merge_tags


def test_merge_tags_is_a_json_merge_patch() -> None:
    assert merge_tags(None, {"a": "1"}) == {"a": "1"}
    assert merge_tags({"a": "1", "b": "2"}, {"b": None, "c": ""}) == {"a": "1", "c": ""}
    assert merge_tags({"a": "1"}, {"gone": None}) == {"a": "1"}
    assert merge_tags({"a": "1"}, None) == {}
    assert merge_tags({"a": "1"}, {}) == {"a": "1"}
    full = {f"k{i}": "v" for i in range(organise.MAX_TAGS)}
    assert merge_tags(full, {"k0": "w"})["k0"] == "w"
    with pytest.raises(EditError, match="at most 50 tags; this edit would leave 51"):
        merge_tags(full, {"one-more": "v"})


@pytest.mark.parametrize(
    "key", ["", "a b", "k:v", "x" * 65, "é", "\ud800", "tab\t", 'quote"', "a*"]
)
def test_bad_tag_keys(key: str) -> None:
    with pytest.raises(EditError):
        organise.check_tag_key(key)


@pytest.mark.parametrize("value", ["x" * 201, "line\nbreak", "nul\x00", "del\x7f", "\ud800"])
def test_bad_tag_values(value: str) -> None:
    with pytest.raises(EditError):
        organise.check_tag_value(value)


def test_good_tags() -> None:
    for key in ("a", "A-z_0.9/x", "x" * 64):
        assert organise.check_tag_key(key) == key
    for value in ("", "x:y=z", "café 😀", "x" * 200, "spaces are fine"):
        assert organise.check_tag_value(value) == value


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_url(db_url), poolclass=pool.NullPool)
    yield engine
    engine.dispose()


def _rows(engine: Engine) -> tuple[str, str, str]:
    with Session(engine) as db:
        ds = Dataset(name="data", n_samples=1, n_features=1, n_targets=1, task="regression",
                     sha256="0" * 64, size_bytes=1, data=b"")  # fmt: skip
        run = Run(name="run", dataset_id="d", network={}, training={}, epochs=1,
                  status="running", metrics={"loss": 0.5}, loss=0.5)  # fmt: skip
        sweep = Sweep(name="sweep", metric="val_loss", spec={}, n_trials=1, n_runs=1,
                      max_concurrent=1)  # fmt: skip
        db.add_all([ds, run, sweep])
        db.commit()
        return ds.id, run.id, sweep.id


def test_apply_changes_only_what_it_is_given(engine: Engine) -> None:
    ds_id, run_id, sweep_id = _rows(engine)
    with engine.begin() as conn:
        assert apply(conn, Run, run_id, Edit(tags={"a": "1", "b": "2"}, notes="n"))
    with engine.begin() as conn:
        assert apply(conn, Run, run_id, Edit(name=None, tags={"b": None}))
        assert apply(conn, Sweep, sweep_id, Edit(tags={"s": "1"}))
        assert apply(conn, Dataset, ds_id, Edit(name="renamed", notes=None))
        assert not apply(conn, Run, "no-such-run", Edit(notes="x"))
    with Session(engine) as db:
        run = db.get(Run, run_id)
        assert run is not None
        assert (run.name, run.tags, run.notes) == (None, {"a": "1"}, "n")
        # nothing else of the run moved: status, metrics, sort columns, no timeline row
        assert (run.status, run.metrics, run.loss) == ("running", {"loss": 0.5}, 0.5)
        assert db.scalars(select(RunTransition)).all() == []
        sweep, ds = db.get(Sweep, sweep_id), db.get(Dataset, ds_id)
        assert sweep is not None and ds is not None
        assert (sweep.name, sweep.tags) == ("sweep", {"s": "1"})
        assert (ds.name, ds.tags, ds.notes) == ("renamed", None, None)
    with engine.begin() as conn:
        assert apply(conn, Run, run_id, Edit(tags=None))
    with Session(engine) as db:
        assert db.scalar(select(Run.tags).where(Run.id == run_id)) is None


def test_apply_refuses_what_breaks_the_rule_and_changes_nothing(engine: Engine) -> None:
    ds_id, run_id, _ = _rows(engine)
    for model, row_id, edit, field in [
        (Dataset, ds_id, Edit(name=None), "name"),
        (Run, run_id, Edit(name="x" * 201), "name"),
        (Run, run_id, Edit(notes="n" * 10_001), "notes"),
        (Run, run_id, Edit(tags={f"k{i}": "v" for i in range(51)}), "tags"),
    ]:
        with engine.connect() as conn, pytest.raises(EditError) as caught:
            apply(conn, model, row_id, edit)
        assert caught.value.field == field
    with Session(engine) as db:
        run = db.get(Run, run_id)
        assert run is not None and (run.name, run.tags, run.notes) == ("run", None, None)
    assert Edit().name is UNSET and Edit().tags is UNSET and Edit().notes is UNSET


def test_edits_at_the_same_time_lose_no_tag(engine: Engine) -> None:
    """Twelve edits, each adding its own tag, at once: the row lock makes each merge see the
    others' results, so every tag is there at the end."""
    _, run_id, _ = _rows(engine)
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def tag(k: int) -> None:
        try:
            start.wait()
            with engine.begin() as conn:
                apply(conn, Run, run_id, Edit(tags={f"t{k}": str(k)}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=tag, args=(k,)) for k in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Session(engine) as db:
        assert db.scalar(select(Run.tags).where(Run.id == run_id)) == {
            f"t{k}": str(k) for k in range(12)
        }


def test_no_tags_is_sql_null_after_any_edit(engine: Engine) -> None:
    """Tags emptied, or never set and a name edited: SQL NULL, not JSON ``null`` (the
    partial index of runs' tags then has no entry for the row)."""
    ds_id, run_id, sweep_id = _rows(engine)
    with engine.begin() as conn:
        assert apply(conn, Run, run_id, Edit(name="renamed"))
        assert apply(conn, Dataset, ds_id, Edit(tags={"a": "1"}))
        assert apply(conn, Dataset, ds_id, Edit(tags={"a": None}))
        assert apply(conn, Sweep, sweep_id, Edit(notes="n"))
    with engine.connect() as conn:
        for model, row_id in ((Run, run_id), (Dataset, ds_id), (Sweep, sweep_id)):
            table = model.__table__
            stored = conn.execute(select(table.c.tags.is_(None)).where(table.c.id == row_id))
            assert stored.scalar_one() is True, model.__name__
