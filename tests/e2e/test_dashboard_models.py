"""End to end: the dashboard's Models page in a real browser (Debian's Chromium driven by
Selenium), against the real API and worker.

The page lists each registered model with its current version, that version's run (a link
to the run's page) and when it last changed, as ``GET /api/v1/models`` has them; a
registration, a rollback and a deletion made through the API show on the next refresh.
A screenshot goes to ``artifacts/dashboard-models.png``. Without Chromium and chromedriver
this test FAILS (tests/e2e/browser.py); it is never skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.e2e.browser import chromium
from tests.e2e.conftest import E2E_ENV
from tests.e2e.stack import Stack, start_stack
from tests.e2e.test_dashboard import _click, _shot, _text, _wait
from tests.seed import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One backend is enough here: the page only talks to the public API."""
    workdir: Path = tmp_path_factory.mktemp("stack-dashboard-models")
    stack = start_stack(f"sqlite:///{workdir / 'backprop.db'}", workdir, **E2E_ENV)
    yield stack
    stack.stop()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


def _rows(driver: webdriver.Chrome) -> list[dict[str, str]]:
    """The models table as shown now, read in one script (the list re-renders as it polls)."""
    return driver.execute_script(
        """
        return [...document.querySelectorAll("#models-table tbody tr[data-model-name]")].map(
          (tr) => ({name: tr.querySelector(".model-name").textContent,
                    version: tr.querySelector(".model-version").textContent,
                    run: tr.querySelector("a.model-run").textContent,
                    href: tr.querySelector("a.model-run").getAttribute("href"),
                    updated: tr.dataset.updated,
                    updatedText: tr.cells[3].textContent}));
        """
    )


def test_the_models_page_lists_names_versions_and_their_runs(
    stack: Stack, browser: webdriver.Chrome
) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y, name="seed")
    runs = [stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "epochs": e},
                         name=f"seed-{e}")["id"] for e in (1, 2)]  # fmt: skip
    assert all(stack.wait_done(run_id)["status"] == "succeeded" for run_id in runs)
    api = stack.client
    for name, run_id in (("seed-model", runs[0]), ("seed-model", runs[1]), ("other", runs[0])):
        assert api.put(f"/api/v1/models/{name}", json={"run_id": run_id}).status_code in (200, 201)

    browser.get(stack.base_url + "/")
    browser.find_element(By.ID, "nav-models").click()
    _wait(browser, "the models page", lambda d: d.current_url.endswith("#/models"))
    _wait(browser, "two models listed", lambda d: len(_rows(d)) == 2)
    assert "active" in browser.find_element(By.ID, "nav-models").get_attribute("class")
    assert "active" not in browser.find_element(By.ID, "nav-runs").get_attribute("class")

    listed = api.get("/api/v1/models").json()["items"]
    expected = [
        {"name": m["name"], "version": f"{m['current_version']} of {m['latest_version']}",
         "run": m["run_id"], "href": f"#/runs/{m['run_id']}", "updated": m["updated_at"]}
        for m in listed
    ]  # fmt: skip
    shown = _rows(browser)
    assert [{k: row[k] for k in expected[0]} for row in shown] == expected
    assert [row["name"] for row in shown] == ["other", "seed-model"]  # newest first
    assert shown[1]["version"] == "2 of 2" and shown[1]["run"] == runs[1]
    assert all(row["updatedText"] not in ("", "—") for row in shown)
    time.sleep(0.2)
    _shot(browser, "dashboard-models.png")

    # A rollback and a deletion through the API show at the next refresh.
    assert api.put("/api/v1/models/seed-model", json={"run_id": runs[0]}).status_code == 200
    assert api.delete("/api/v1/models/other").status_code == 204
    _wait(browser, "the rollback and the deletion shown",
          lambda d: [(r["name"], r["version"], r["run"]) for r in _rows(d)]
          == [("seed-model", "1 of 2", runs[0])])  # fmt: skip

    # The run link opens the run's page.
    _click(browser, 'tr[data-model-name="seed-model"] a.model-run')
    _wait(browser, "the run page", lambda d: d.current_url.endswith(f"#/runs/{runs[0]}"))
    _wait(browser, "the run's status", lambda d: _text(d, "#run-status") == "succeeded")
    assert "active" in browser.find_element(By.ID, "nav-runs").get_attribute("class")

    # No models: the page says how to make one.
    assert api.delete("/api/v1/models/seed-model").status_code == 204
    browser.get(stack.base_url + "/#/models")
    _wait(browser, "the empty list", lambda d: "No models yet" in (_text(d, "#models-table") or ""))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
