"""`backprop keys create --owner NAME`: a bad owner is a usage error (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from core.db.migrate import upgrade


def keys(*args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    env["BACKPROP_DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("owner", "says"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("a" * 201, "is 201 characters long; the limit is 200"),
        ("team\nB", "control characters"),
        (" alice", "begin or end with whitespace"),
    ],
)
def test_a_bad_owner_is_a_usage_error_naming_the_rule(sqlite_url: str, owner: str, says: str
                                                      ) -> None:  # fmt: skip
    upgrade(sqlite_url)
    result = keys("create", "--owner", owner, db_url=sqlite_url)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--owner" in result.stderr and says in " ".join(result.stderr.split()), result.stderr
    assert json.loads(keys("list", "--json", db_url=sqlite_url).stdout) == []  # nothing made


def test_a_good_owner_gets_a_key_up_to_200_characters(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    for owner in ("alice", "ü" * 200, "team B / ops"):
        result = keys("create", "--owner", owner, "--json", db_url=sqlite_url)
        assert result.returncode == 0, result.stderr
        made = json.loads(result.stdout)
        assert made["owner"] == owner and made["key"].startswith("bp_")
    listed = json.loads(keys("list", "--json", db_url=sqlite_url).stdout)
    assert sorted(k["owner"] for k in listed) == sorted(["alice", "ü" * 200, "team B / ops"])


def test_revoke_takes_a_unique_id_prefix_and_names_the_candidates_of_an_ambiguous_one(
    sqlite_url: str,
) -> None:
    upgrade(sqlite_url)
    made = [json.loads(keys("create", "--owner", o, "--json", db_url=sqlite_url).stdout)
            for o in ("alice", "bob")]  # fmt: skip
    # Two ids that share a prefix "c0ffee", as UUIDs sometimes do.
    ids = ["c0ffee00-0000-4000-8000-000000000001", "c0ffee99-0000-4000-8000-000000000002"]
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        for key, new_id in zip(made, ids, strict=True):
            conn.execute(text("UPDATE api_keys SET id = :new WHERE id = :old"),
                         {"new": new_id, "old": key["id"]})  # fmt: skip
    engine.dispose()

    ambiguous = keys("revoke", "c0ffee", db_url=sqlite_url)
    assert ambiguous.returncode == 1 and ambiguous.stdout == "", ambiguous
    assert ambiguous.stderr.strip() == (
        f"key id prefix c0ffee is ambiguous: it begins {ids[0]}, {ids[1]}; "
        "give more characters of the id"
    )
    assert keys("revoke", "c0ff", db_url=sqlite_url).returncode == 1  # too short: no such id
    done = keys("revoke", "C0FFEE99", db_url=sqlite_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"revoked {ids[1]}"
    listed = json.loads(keys("list", "--json", db_url=sqlite_url).stdout)
    assert {k["id"]: k["revoked_at"] is not None for k in listed} == {ids[0]: False, ids[1]: True}
