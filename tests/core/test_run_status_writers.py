"""Only core/runs/lifecycle.py changes a run's status: a static check of every module.

It looks for the ways SQLAlchemy and SQL can write ``runs.status``: ``update(Run)`` or
``update(<runs table>)`` with ``.values(status=…)`` (or a ``values`` dict naming
``status``), ``insert(...)`` is not an update; raw SQL text that says ``UPDATE runs``
and ``status``; and an attribute assignment ``<run>.status = …`` on an ORM object.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "core", "workers", "cli", "client")
THE_LIFECYCLE = Path("core/runs/lifecycle.py")
RUN_TABLES = {"Run", "_runs", "runs"}
_RAW_UPDATE = re.compile(r"update\s+runs\b.*\bstatus\b", re.IGNORECASE | re.DOTALL)


def _update_target(node: ast.AST) -> str | None:
    """The table of ``update(T)`` at the root of a method chain, as written."""
    while isinstance(node, ast.Call | ast.Attribute):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "update" and node.args:
                return ast.unparse(node.args[0])
            node = node.func
        else:
            node = node.value
    return None


def _names_a_run_table(target: str) -> bool:
    return any(part in RUN_TABLES for part in re.split(r"[^\w]+", target))


def _sets_status(call: ast.Call) -> bool:
    if any(kw.arg == "status" for kw in call.keywords):
        return True
    for arg in [*call.args, *(kw.value for kw in call.keywords if kw.arg is None)]:
        if isinstance(arg, ast.Dict) and any(
            isinstance(k, ast.Constant) and k.value == "status" for k in arg.keys
        ):
            return True
        if isinstance(arg, ast.Name):  # .values(**values): a dict built elsewhere
            return True
    return False


def status_writes(source: str) -> list[str]:
    """Where ``source`` writes a run's status: ``"line N: what"`` for each."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "values"
            and _sets_status(node)
        ):
            target = _update_target(node.func.value)
            if target is not None and _names_a_run_table(target):
                found.append(f"line {node.lineno}: update({target}).values(status=…)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _RAW_UPDATE.search(node.value):
                found.append(f"line {node.lineno}: SQL text updating runs.status")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target_node in targets:
                if (
                    isinstance(target_node, ast.Attribute)
                    and target_node.attr == "status"
                    and not (isinstance(target_node.value, ast.Name)
                             and target_node.value.id == "self")
                ):  # fmt: skip
                    found.append(f"line {node.lineno}: {ast.unparse(target_node)} = …")
    return found


def _modules() -> list[Path]:
    return sorted(
        path.relative_to(ROOT) for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    )


def test_only_the_lifecycle_module_writes_a_runs_status() -> None:
    offenders = {
        str(path): writes
        for path in _modules()
        if path != THE_LIFECYCLE and (writes := status_writes((ROOT / path).read_text()))
    }
    assert offenders == {}, f"runs.status written outside {THE_LIFECYCLE}: {offenders}"


def test_the_lifecycle_module_is_where_the_writes_are() -> None:
    """The scan sees the writes that exist: it is not blind."""
    assert (
        len(status_writes((ROOT / THE_LIFECYCLE).read_text())) >= 7
    )  # claim, hand back, reclaim, cancel ×2, ends ×2


@pytest.mark.parametrize(
    "snippet",
    [
        "update(Run).where(Run.id == x).values(status='failed')",
        "s.execute(update(Run).values(error=e, status=RunStatus.failed.value))",
        "update(_runs).values({'status': 'queued'})",
        "update(Run.__table__).values(**values)",
        "conn.execute(text('UPDATE runs SET status = :s WHERE id = :id'))",
        "run.status = 'cancelled'",
    ],
)
def test_every_way_of_writing_a_status_is_caught(snippet: str) -> None:
    assert status_writes(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        "update(Sweep).values(status='cancelled')",
        "update(Run).values(cancel_requested=True)",
        "insert(Run).values(status='queued')",
        "self.status = status",
    ],
)
def test_what_is_not_a_runs_status_write_is_left_alone(snippet: str) -> None:
    assert not status_writes(snippet)
