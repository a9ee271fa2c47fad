"""The documentation names every setting and every command a user can type."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"BACKPROP_{name.upper()}"
        for name in Settings.model_fields
        if f"`BACKPROP_{name.upper()}`" not in readme
    ]
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_readme_names_the_test_and_run_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
