"""End to end: the dashboard for many runs (issue #13) in headless Chromium.

A real stack (on SQLite, then on PostgreSQL, each database its own) trains a few runs — two
on one dataset, one that early stopping ended, one that diverged — and an ASHA grid sweep
that prunes some of its trials. Then the browser:

- draws a run's curves with uPlot: a canvas, a point per epoch in the chart's data hooks,
  the best epoch marked where it belongs, a linear/log toggle that switches uPlot's y scale,
  drag-to-zoom that narrows the x range and a double-click that restores it;
- lists runs with the sweep's trials folded under one row, and names why runs ended
  (``early stopped``, ``diverged``, ``pruned``);
- filters (several statuses at once), searches, sorts and filters by tag, keeping the
  filters in the URL (this test needs the list filters of ``GET /api/v1/runs``, API.md §5c);
- compares marked runs: one chart per metric with one series per run, and only the settings
  that differ;
- shows the sweep: its leaderboard in the API's order, the objective against each
  parameter, each pruned trial's rung and cutoff (or the reason its timeline gives);
- shows a dataset with its runs.

Screenshots go to ``artifacts/``; each test checks the elements that must be in them and
that the browser logged no error.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from tests.e2e.browser import chromium
from tests.e2e.conftest import E2E_ENV
from tests.e2e.stack import Stack, early_stopped_run, start_stack, wait_for
from tests.e2e.test_dashboard import _attr, _chart, _click, _shot, _text, _wait

NETWORK = {
    "input_dim": 2,
    "layers": [{"units": 8, "activation": "tanh"}, {"units": 2, "activation": "softmax"}],
}
TRAINING = {
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "epochs": 20,
    "batch_size": 8,
    "validation_split": 0.25,
    "seed": 1,
}
SWEPT = {
    # Good rates first: a grid runs in order, so the weak ones meet full rungs (ASHA).
    "training.optimizer.learning_rate": [0.5, 0.2, 1e-5, 3e-5, 0.1],
    "network.layers.0.activation": ["tanh", "relu"],
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack on a database of its own: the pages list everything its owner has."""
    workdir: Path = tmp_path_factory.mktemp(f"stack-dashboard-many-{request.param}")
    if request.param == "sqlite":
        stack = start_stack(f"sqlite:///{workdir / 'backprop.db'}", workdir, **E2E_ENV)
        yield stack
        stack.stop()
        return
    server = request.getfixturevalue("pg_server_url")
    name = f"backprop_dash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        stack = start_stack(f"{server.rsplit('/', 1)[0]}/{name}", workdir, **E2E_ENV)
        yield stack
        stack.stop()
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


def _blobs(n: int, seed: int) -> tuple[list[list[float]], list[str]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    return X.tolist(), ["right" if x > 0 else "left" for x in X[:, 0] + 0.3 * X[:, 1]]


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, Any]:
    """Finished runs of every kind the pages tell apart, and a finished sweep."""
    X, y = _blobs(60, seed=0)
    blobs = stack.upload_json(X, y, name="blobs", task="classification")
    sgd = stack.submit(blobs["id"], NETWORK, TRAINING, name="alpha-sgd")
    adam = stack.submit(
        blobs["id"],
        NETWORK,
        {**TRAINING, "optimizer": {"name": "adam", "learning_rate": 0.02}},
        name="alpha-adam",
    )
    wide = {**NETWORK, "layers": [{"units": 16, "activation": "relu"}, NETWORK["layers"][1]]}
    beta = stack.submit(blobs["id"], wide, {**TRAINING, "epochs": 12}, name="beta-wide")
    # A run that diverges: a large learning rate on unscaled targets.
    rng = np.random.default_rng(0)
    Xr = rng.normal(size=(32, 2)) * 100
    far = stack.upload_json(Xr.tolist(), (Xr @ [[3.0], [2.0]]).tolist(), name="far")
    regression = {
        "input_dim": 2,
        "layers": [{"units": 8, "activation": "relu"}, {"units": 1, "activation": "identity"}],
    }
    diverging = stack.submit(
        far["id"],
        regression,
        {
            "loss": "mse",
            "optimizer": {"name": "sgd", "learning_rate": 10.0},
            "epochs": 50,
            "batch_size": 4,
        },
        name="gamma-diverges",
    )
    sweep = stack.client.post(
        "/api/v1/sweeps",
        json={
            "name": "lr-grid",
            "base": {
                "dataset_id": blobs["id"],
                "network": NETWORK,
                "training": {**TRAINING, "epochs": 27},
            },
            "search": {"type": "grid", "parameters": SWEPT},
            "metric": "val_loss",
            "max_concurrent": 2,
            "pruning": {"type": "asha", "min_epochs": 1, "eta": 3},
        },
    )
    assert sweep.status_code == 202, sweep.text
    stopped = early_stopped_run(stack)
    done = {
        k: stack.wait_done(r["id"])
        for k, r in (("sgd", sgd), ("adam", adam), ("beta", beta), ("diverged", diverging))
    }
    assert {k: r["status"] for k, r in done.items()} == {
        "sgd": "succeeded",
        "adam": "succeeded",
        "beta": "succeeded",
        "diverged": "failed",
    }
    assert "diverged" in done["diverged"]["error"]
    sweep_id = sweep.json()["id"]

    def ended() -> dict | None:
        record = stack.client.get(f"/api/v1/sweeps/{sweep_id}").json()
        return record if record["status"] not in ("queued", "running") else None

    finished = wait_for(ended, 180, "the sweep to end", interval=0.5)
    assert finished["status"] == "succeeded", finished
    assert any(e.get("stop_reason") == "pruned" for e in finished["leaderboard"]), finished
    return {
        "blobs": blobs,
        "far": far,
        "sweep": finished,
        "early": stopped,
        **{k: done[k] for k in done},
    }


def _all_runs(stack: Stack) -> list[dict]:
    return stack.client.get("/api/v1/runs", params={"limit": 500}).json()["items"]


def _no_errors(driver: webdriver.Chrome) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def _rows(driver: webdriver.Chrome, css: str, attr: str = "data-run-id") -> list[str]:
    """The ``attr`` of every element matching ``css``, read in one script (lists re-render)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map((el) => el.getAttribute(arguments[1]));",
        css,
        attr,
    )


def _shot_showing(
    driver: webdriver.Chrome, name: str, *selectors: str, colors: dict[str, list[str]] | None = None
) -> Path:
    """Scroll the first of ``selectors`` to the top, check that each selector (and each key
    of ``colors``) is an element shown inside the window, save the screenshot, and check the
    picture itself: inside each key's element it has pixels of each of that key's colours
    (the curves or points that uPlot drew there)."""
    colors = colors or {}
    driver.execute_script(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});", selectors[0]
    )
    time.sleep(0.3)
    wanted = [*selectors, *colors]
    rects = driver.execute_script(
        """
        return arguments[0].map((css) => {
          const el = document.querySelector(css);
          if (!el) return null;
          const r = el.getBoundingClientRect();
          const style = getComputedStyle(el);
          return {x: r.left, y: r.top, w: r.width, h: r.height,
                  shown: style.display !== "none" && style.visibility !== "hidden"};
        });
        """,
        wanted,
    )
    height, ratio = driver.execute_script("return [innerHeight, devicePixelRatio];")
    for css, r in zip(wanted, rects, strict=True):
        assert r and r["shown"] and r["w"] > 0 and r["h"] > 0, f"{css} is not shown: {r}"
        assert r["y"] < height and r["y"] + r["h"] > 0, f"{css} is outside the window: {r}"
    path = _shot(driver, name)
    image = Image.open(path).convert("RGB")
    for css, hexes in colors.items():
        r = rects[wanted.index(css)]
        box = [round(v * ratio) for v in (r["x"], max(r["y"], 0), r["x"] + r["w"], r["y"] + r["h"])]
        pixels = np.asarray(image.crop(box)).reshape(-1, 3).astype(int)
        for hex_color in hexes:
            rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
            near = int((np.abs(pixels - rgb).max(axis=1) <= 40).sum())
            assert near >= 20, f"{name}: {hex_color} hardly in {css} ({near} pixels)"
    return path


def _hooks(driver: webdriver.Chrome, chart_id: str) -> dict:
    """The chart's scale and range hooks, and what the uPlot instance itself says."""
    return driver.execute_script(
        """
        const box = document.getElementById(arguments[0]);
        const chart = window.backpropCharts.get(arguments[0]);
        const u = chart && chart.uplot;
        return {yScale: box.dataset.yScale, yDistr: Number(box.dataset.yDistr),
                uDistr: u ? u.scales.y.distr : null, zoomed: box.dataset.zoomed,
                xMin: Number(box.dataset.xMin), xMax: Number(box.dataset.xMax),
                uMin: u ? u.scales.x.min : null, uMax: u ? u.scales.x.max : null,
                yLabel: u ? u.axes[1].label : null};
        """,
        chart_id,
    )


# -- a run's chart: uPlot, the best epoch, the scale toggle, zoom ---------------------------


def test_run_chart_marks_the_best_epoch_toggles_log_and_zooms(
    stack: Stack, world: dict, browser: webdriver.Chrome
) -> None:
    run = world["early"]
    best = run["best_epoch"]
    stored = stack.client.get(f"/api/v1/runs/{run['id']}/metrics").json()["items"]
    assert 1 <= best < len(stored)
    browser.get(f"{stack.base_url}/#/runs/{run['id']}")
    _wait(browser, "every epoch drawn", lambda d: (_chart(d) or {}).get("points") == len(stored))
    _wait(browser, "the best epoch marked", lambda d: d.find_elements(By.ID, "best-epoch-marker"))
    chart = _chart(browser)
    assert chart["canvas"]
    assert chart["counts"] == {"loss": len(stored), "val_loss": len(stored)}, chart
    assert chart["epochs"] == [item["epoch"] for item in stored]
    assert _text(browser, "#run-status") == "early stopped"

    # The marker sits at the best epoch's x, inside the plot.
    where = browser.execute_script(
        """
        const marker = document.getElementById("best-epoch-marker");
        const u = window.backpropCharts.get("chart").uplot;
        const over = u.over.getBoundingClientRect();
        const at = marker.getBoundingClientRect();
        return {epoch: Number(marker.dataset.epoch), left: at.left - over.left,
                expected: u.valToPos(Number(marker.dataset.epoch), "x"),
                width: over.width, visible: !marker.hidden, text: marker.textContent};
        """
    )
    assert where["epoch"] == best and where["visible"], where
    assert abs(where["left"] - where["expected"]) < 2 and 0 < where["left"] < where["width"]
    assert where["text"] == f"best epoch {best}"

    # linear -> log -> linear: the box's data-y-distr follows uPlot's own y scale.
    hooks = _hooks(browser, "chart")
    assert (hooks["yScale"], hooks["yDistr"], hooks["uDistr"]) == ("linear", 1, 1), hooks
    _click(browser, '#chart .scale-btn[data-scale="log"]')
    _wait(browser, "a log y scale", lambda d: _hooks(d, "chart")["uDistr"] == 3)
    hooks = _hooks(browser, "chart")
    assert (hooks["yScale"], hooks["yDistr"]) == ("log", 3) and hooks["yLabel"] == "loss (log)"
    assert _chart(browser)["counts"] == {"loss": len(stored), "val_loss": len(stored)}
    assert browser.find_element(By.ID, "best-epoch-marker").is_displayed()
    _shot_showing(
        browser,
        "dashboard-run-chart-log.png",
        "#chart",
        "#best-epoch-marker",
        '#chart .scale-btn.active[data-scale="log"]',
        colors={"#chart .uplot canvas": ["#1f77b4", "#ff7f0e"]},
    )
    _click(browser, '#chart .scale-btn[data-scale="linear"]')
    _wait(browser, "a linear y scale again", lambda d: _hooks(d, "chart")["uDistr"] == 1)

    # Drag across the middle of the plot: the x range narrows to it; double-click restores.
    full = _hooks(browser, "chart")
    assert full["zoomed"] == "false" and (full["xMin"], full["xMax"]) == (1, len(stored))
    over = browser.find_element(By.CSS_SELECTOR, "#chart .u-over")
    width = over.size["width"]
    ActionChains(browser).move_to_element_with_offset(
        over, -int(width * 0.3), 0
    ).click_and_hold().move_by_offset(int(width * 0.45), 0).release().perform()
    _wait(browser, "the chart to zoom in", lambda d: _hooks(d, "chart")["zoomed"] == "true")
    zoomed = _hooks(browser, "chart")
    assert full["xMin"] < zoomed["xMin"] < zoomed["xMax"] < full["xMax"], (full, zoomed)
    assert zoomed["xMin"] == pytest.approx(zoomed["uMin"]) and zoomed["xMax"] == pytest.approx(
        zoomed["uMax"]
    )
    assert browser.find_element(By.CSS_SELECTOR, "#chart .zoom-reset").is_enabled()
    _shot_showing(
        browser,
        "dashboard-run-chart-zoomed.png",
        "#chart",
        colors={"#chart .uplot canvas": ["#1f77b4", "#ff7f0e"]},
    )
    ActionChains(browser).double_click(over).perform()
    _wait(browser, "the zoom to reset", lambda d: _hooks(d, "chart")["zoomed"] == "false")
    again = _hooks(browser, "chart")
    assert (again["xMin"], again["xMax"]) == (full["xMin"], full["xMax"])
    _no_errors(browser)


# -- the runs list ----------------------------------------------------------------------------


def test_runs_list_folds_sweep_trials_and_says_why_runs_ended(
    stack: Stack, world: dict, browser: webdriver.Chrome
) -> None:
    sweep = world["sweep"]
    runs = _all_runs(stack)
    trials = [r for r in runs if r.get("sweep_id") == sweep["id"]]
    top = [r["id"] for r in runs if not r.get("sweep_id")]
    assert len(trials) == len(sweep["leaderboard"]) == 10
    browser.get(stack.base_url + "/")
    sweep_css = f'tr.sweep-row[data-sweep-id="{sweep["id"]}"]'
    _wait(browser, "the sweep's row", lambda d: d.find_elements(By.CSS_SELECTOR, sweep_css))
    _wait(
        browser,
        "every top-level run",
        lambda d: set(_rows(d, "#runs-table tr[data-run-id]")) == set(top),
    )
    assert len(_rows(browser, "#runs-table tr.sweep-row", "data-sweep-id")) == 1
    assert "10 trials" in (_text(browser, sweep_css) or "")
    assert f"(trial {sweep['best']['trial']})" in (_text(browser, f"{sweep_css} .sweep-best") or "")

    def shown(run_id: str) -> str | None:
        return _text(browser, f'tr[data-run-id="{run_id}"] .status')

    assert shown(world["early"]["id"]) == "early stopped"
    assert shown(world["diverged"]["id"]) == "diverged"
    assert shown(world["sgd"]["id"]) == "succeeded"
    assert (
        browser.execute_script(
            "return document.querySelector(arguments[0]).dataset.status;",
            f'tr[data-run-id="{world["diverged"]["id"]}"] .status',
        )
        == "failed"
    )
    _shot_showing(
        browser,
        "dashboard-runs-folded.png",
        "#runs-filters",
        sweep_css,
        f'tr[data-run-id="{world["early"]["id"]}"] .status-early-stopped',
        f'tr[data-run-id="{world["diverged"]["id"]}"] .status-diverged',
    )

    # Open the sweep: its trials come under its row, the pruned ones named so.
    _click(browser, f"{sweep_css} button.expand")
    trial_rows = "#runs-table tr.trial-row[data-run-id]"
    _wait(browser, "the sweep's trials", lambda d: len(_rows(d, trial_rows)) == len(trials))
    assert set(_rows(browser, trial_rows)) == {t["id"] for t in trials}
    for trial in trials:
        want = "pruned" if trial.get("stop_reason") == "pruned" else trial["status"]
        assert shown(trial["id"]) == want, trial
    assert "pruned" in [shown(t["id"]) for t in trials]
    _shot_showing(
        browser,
        "dashboard-runs-sweep-open.png",
        sweep_css,
        f'{sweep_css} button.expand[aria-expanded="true"]',
        "#runs-table tr.trial-row .status-pruned",
    )
    _click(browser, f"{sweep_css} button.expand")
    _wait(
        browser,
        "the trials folded again",
        lambda d: not d.find_elements(By.CSS_SELECTOR, "#runs-table tr.trial-row"),
    )
    _no_errors(browser)


def test_runs_list_filters_searches_sorts_and_filters_by_tag(
    stack: Stack, world: dict, browser: webdriver.Chrome
) -> None:
    """Needs the list filters and sorts of GET /api/v1/runs and PATCH (API.md §5c)."""
    tags = {
        "sgd": {"project": "alpha", "stage": "final"},
        "adam": {"project": "alpha"},
        "beta": {"project": "beta"},
    }
    for key, value in tags.items():
        resp = stack.client.patch(f"/api/v1/runs/{world[key]['id']}", json={"tags": value})
        assert resp.status_code == 200, resp.text

    def api_ids(**params: Any) -> list[str]:
        body = stack.client.get("/api/v1/runs", params={"top_level": "true", **params})
        assert body.status_code == 200, body.text
        return [r["id"] for r in body.json()["items"]]

    browser.get(stack.base_url + "/")
    _wait(browser, "the runs", lambda d: len(_rows(d, "#runs-table tr[data-run-id]")) >= 5)
    rows_css = "#runs-table tr[data-run-id]"
    browser.get_log("performance")

    # Two statuses at once.
    _click(browser, '#runs-status input[value="failed"]')
    _click(browser, '#runs-status input[value="succeeded"]')
    want = api_ids(status=["failed", "succeeded"])
    _wait(browser, "succeeded and failed runs", lambda d: _rows(d, rows_css) == want)
    assert world["diverged"]["id"] in want and world["sgd"]["id"] in want
    urls = _urls(browser, "/api/v1/runs?")
    assert any(
        "status=failed" in u and "status=succeeded" in u and "top_level=true" in u for u in urls
    ), urls
    assert "status=failed" in browser.current_url and "status=succeeded" in browser.current_url
    _click(browser, '#runs-status input[value="failed"]')
    _wait(
        browser, "only succeeded runs", lambda d: _rows(d, rows_css) == api_ids(status="succeeded")
    )

    # A name search.
    search = browser.find_element(By.ID, "runs-q")
    search.send_keys("alpha")
    want = api_ids(status="succeeded", q="alpha")
    assert set(want) == {world["sgd"]["id"], world["adam"]["id"]}
    _wait(browser, "the alpha runs", lambda d: _rows(d, rows_css) == want)
    assert "q=alpha" in browser.current_url

    # A tag, picked from a row's chips; then the search cleared.
    _click(browser, f'tr[data-run-id="{world["sgd"]["id"]}"] button.tag[data-tag="stage:final"]')
    _wait(browser, "the tagged run", lambda d: _rows(d, rows_css) == [world["sgd"]["id"]])
    assert _rows(browser, "#runs-tags .tag-filter", "data-tag") == ["stage:final"]
    assert "tag=stage%3Afinal" in browser.current_url or "tag=stage:final" in browser.current_url
    search.clear()
    search.send_keys(" ")  # an input event for the cleared field
    _click(browser, '#runs-tags .tag-filter[data-tag="stage:final"]')
    _wait(
        browser,
        "the succeeded runs again",
        lambda d: _rows(d, rows_css) == api_ids(status="succeeded"),
    )
    tag_form = browser.find_element(By.ID, "runs-tag")
    tag_form.send_keys("project:alpha")
    _click(browser, '#runs-tag-form button[type="submit"]')
    want = api_ids(status="succeeded", tag="project:alpha")
    _wait(browser, "the project:alpha runs", lambda d: _rows(d, rows_css) == want)

    # Sorted by validation loss, lowest first: the API's order; the sweep row comes first.
    browser.get(stack.base_url + "/#/?sort=val_loss&order=asc")
    browser.refresh()
    want = api_ids(sort="val_loss", order="asc")
    _wait(browser, "the runs by val_loss", lambda d: _rows(d, rows_css) == want)
    assert browser.find_element(By.ID, "runs-sort").get_attribute("value") == "val_loss"
    assert browser.find_element(By.ID, "runs-order").get_attribute("value") == "asc"
    values = [r["metrics"].get("val_loss") for r in _top_level(stack, want)]
    known = [v for v in values if v is not None]
    assert known == sorted(known) and values[: len(known)] == known
    first = browser.execute_script(
        "return document.querySelector('#runs-table tbody tr').className;"
    )
    assert first == "sweep-row"
    _shot_showing(browser, "dashboard-runs-sorted.png", "#runs-filters", "#runs-table")

    # The filters live in the URL: a fresh load shows the same list with the same controls.
    browser.get(stack.base_url + "/#/?status=failed&status=cancelled&q=gamma")
    browser.refresh()
    _wait(
        browser, "the diverged run alone", lambda d: _rows(d, rows_css) == [world["diverged"]["id"]]
    )
    checked = browser.execute_script(
        "return Array.from(document.querySelectorAll('#runs-status input:checked'))"
        ".map((b) => b.value);"
    )
    assert checked == ["failed", "cancelled"]
    assert browser.find_element(By.ID, "runs-q").get_attribute("value") == "gamma"
    _shot_showing(
        browser,
        "dashboard-runs-filtered.png",
        "#runs-filters",
        f'#runs-table tr[data-run-id="{world["diverged"]["id"]}"]',
    )
    _no_errors(browser)


def _urls(driver: webdriver.Chrome, fragment: str) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if fragment in url:
                urls.append(url)
    return urls


def _top_level(stack: Stack, ids: list[str]) -> list[dict]:
    by_id = {r["id"]: r for r in _all_runs(stack)}
    return [by_id[i] for i in ids]


# -- compare -------------------------------------------------------------------------------------


def _flatten(value: Any, path: str, out: dict[str, Any]) -> dict[str, Any]:
    """The page's dotted paths of a run's settings (app.js flatten)."""
    if isinstance(value, list):
        if all(v is None or not isinstance(v, (dict, list)) for v in value):
            out[path] = json.dumps(value)
        else:
            for i, v in enumerate(value):
                _flatten(v, f"{path}.{i}", out)
    elif isinstance(value, dict):
        if not value:
            out[path] = "{}"
        for k, v in value.items():
            _flatten(v, f"{path}.{k}" if path else k, out)
    else:
        out[path] = value
    return out


def test_compare_view_overlays_runs_and_lists_what_differs(
    stack: Stack, world: dict, browser: webdriver.Chrome
) -> None:
    chosen = [world["sgd"], world["adam"], world["early"]]
    browser.get(stack.base_url + "/")
    for run in chosen:
        box = f'#runs-table input.select-run[data-run-id="{run["id"]}"]'
        _wait(browser, "the run's box", lambda d, css=box: d.find_elements(By.CSS_SELECTOR, css))
        _click(browser, box)
    _wait(browser, "three marked", lambda d: "3 marked" in (_text(d, "#compare-count") or ""))
    assert browser.find_element(By.ID, "compare-button").is_enabled()
    _shot_showing(browser, "dashboard-runs-marked.png", "#compare-button", "#runs-table")
    _click(browser, "#compare-button")
    _wait(browser, "the compare view", lambda d: "#/compare?runs=" in d.current_url)

    metrics = {
        r["id"]: stack.client.get(f"/api/v1/runs/{r['id']}/metrics").json()["items"] for r in chosen
    }
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        chart_id = f"compare-{key}"
        want = {rid: sum(1 for it in items if key in it) for rid, items in metrics.items()}
        _wait(browser, f"the {key} chart", lambda d, c=chart_id, w=want: _series(d, c) == w)
        drawn = _chart(browser, chart_id)
        assert drawn["canvas"] and drawn["series"] == 3, drawn
        epochs = {it["epoch"] for items in metrics.values() for it in items if key in it}
        assert drawn["points"] == len(epochs)
    # The early-stopped run's best epoch is marked on its curves.
    marked = _rows(browser, "#compare-loss .epoch-marker", "data-key")
    assert marked == [world["early"]["id"]]
    assert _rows(browser, "#compare-loss .epoch-marker", "data-epoch") == [
        str(world["early"]["best_epoch"])
    ]

    # Only the settings that differ, one column per run.
    records = [stack.client.get(f"/api/v1/runs/{r['id']}").json() for r in chosen]
    flat = [_flatten({"network": r["network"], "training": r["training"]}, "", {}) for r in records]
    keys = sorted({k for f in flat for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]
    assert "training.optimizer.name" in differ and "network.input_dim" in differ
    assert "training.epochs" in differ and "training.loss" in differ
    assert "training.batch_size" not in differ  # 8 in each
    _wait(
        browser,
        "the differences",
        lambda d: _rows(d, "#compare-params tbody tr", "data-key") == differ,
    )
    assert not any(k.startswith(("network.initial", "dataset")) for k in differ)
    cells = browser.execute_script(
        "const row = 'tr[data-key=\"training.optimizer.name\"]';"
        "return Array.from(document.querySelectorAll('#compare-params ' + row + ' td'))"
        ".map((td) => [td.dataset.runId, td.textContent]);"
    )
    assert cells == [[r["id"], r["training"]["optimizer"]["name"]] for r in records]
    assert _rows(browser, "#compare-summary thead th[data-run-id]") == [r["id"] for r in chosen]
    _shot_showing(
        browser,
        "dashboard-compare.png",
        "#compare-summary",
        "#compare-loss",
        colors={"#compare-loss .uplot canvas": ["#1f77b4", "#ff7f0e", "#2ca02c"]},
    )
    _shot_showing(browser, "dashboard-compare-settings.png", "#compare-params")
    _no_errors(browser)


def _series(driver: webdriver.Chrome, chart_id: str) -> dict[str, int] | None:
    """Points per run of a compare chart (its legend rows carry the run ids)."""
    return driver.execute_script(
        """
        const box = document.getElementById(arguments[0]);
        if (!box) return null;
        const out = {};
        for (const row of box.querySelectorAll("tr.u-series[data-run-id]")) {
          out[row.dataset.runId] = Number(row.dataset.count);
        }
        return out;
        """,
        chart_id,
    )


# -- sweeps -----------------------------------------------------------------------------------


def test_sweep_page_leaderboard_objective_and_pruned_trials(
    stack: Stack, world: dict, browser: webdriver.Chrome
) -> None:
    sweep = world["sweep"]
    board = sweep["leaderboard"]
    browser.get(stack.base_url + "/#/sweeps")
    row_css = f'#sweeps-table tr[data-sweep-id="{sweep["id"]}"]'
    _wait(browser, "the sweep listed", lambda d: d.find_elements(By.CSS_SELECTOR, row_css))
    assert "lr-grid" in (_text(browser, row_css) or "")
    assert "grid + asha" in (_text(browser, row_css) or "")
    _shot_showing(browser, "dashboard-sweeps.png", row_css)
    _click(browser, f"{row_css} a")
    _wait(
        browser, "the leaderboard", lambda d: len(_rows(d, "#leaderboard tbody tr")) == len(board)
    )

    # In the API's order, best first, with each trial's parameters and value.
    assert _rows(browser, "#leaderboard tbody tr") == [e["run_id"] for e in board]
    assert _rows(browser, "#leaderboard tbody tr", "data-rank") == [
        str(i + 1) for i in range(len(board))
    ]
    succeeded = [e["val_loss"] for e in board if e["status"] == "succeeded"]
    assert succeeded == sorted(succeeded)
    first = board[0]
    row = f'#leaderboard tr[data-run-id="{first["run_id"]}"]'
    lr = _text(browser, f'{row} td[data-param="training.optimizer.learning_rate"]')
    assert float(lr or "nan") == first["params"]["training.optimizer.learning_rate"]
    act = _text(browser, f'{row} td[data-param="network.layers.0.activation"]')
    assert act == first["params"]["network.layers.0.activation"]
    statuses = _rows(browser, "#leaderboard tbody tr .status", "data-shown")
    shown = dict(zip(_rows(browser, "#leaderboard tbody tr"), statuses, strict=True))
    for entry in board:
        want = "pruned" if entry.get("stop_reason") == "pruned" else entry["status"]
        assert shown[entry["run_id"]] == want, entry

    # The objective against each parameter: one scatter per parameter, a point per trial.
    with_value = [e for e in board if isinstance(e.get("val_loss"), (int, float))]
    for i, param in enumerate(SWEPT):
        chart_id = f"objective-{i}"
        n = len(with_value)
        _wait(browser, f"the {param} chart", lambda d, c=chart_id, n=n: _points(d, c) == n)
        drawn = _chart(browser, chart_id)
        assert drawn["canvas"], drawn
        assert sum(drawn["counts"].values()) == len(with_value), drawn
        pruned_values = sum(1 for e in with_value if e["status"] != "succeeded")
        assert drawn["counts"]["stopped"] == pruned_values
        assert (
            browser.execute_script(
                "return document.getElementById(arguments[0]).dataset.param;", chart_id
            )
            == param
        )
    # The learning rate spans decades: a log x axis; the activation is categorical.
    x_distr = browser.execute_script(
        "return [0, 1].map((i) =>"
        " window.backpropCharts.get('objective-' + i).uplot.scales.x.distr);"
    )
    assert x_distr == [3, 1]
    _click(browser, '#objective-0 .scale-btn[data-scale="log"]')
    _wait(browser, "a log objective axis", lambda d: _hooks(d, "objective-0")["uDistr"] == 3)

    # Each pruned trial: its rung and the cutoff it missed (stop_details), else the reason.
    pruned = [e for e in board if e.get("stop_reason") == "pruned"]
    assert pruned
    assert _rows(browser, "#pruned-trials tbody tr") == [e["run_id"] for e in pruned]
    for entry in pruned:
        run = stack.client.get(f"/api/v1/runs/{entry['run_id']}").json()
        css = f'#pruned-trials tr[data-run-id="{entry["run_id"]}"]'
        reason = run["transitions"][-1]["reason"]
        assert reason.startswith("pruned at rung")
        assert _text(browser, f"{css} .reason") == reason
        details = entry.get("stop_details") or run.get("stop_details")
        if details:
            assert _text(browser, f"{css} .rung") == str(details["rung"])
            assert float(_text(browser, f"{css} .cutoff") or "nan") == pytest.approx(
                details["cutoff"], rel=1e-3
            )
        else:  # before stop_details: the reason says rung and cutoff
            assert "cutoff" in reason
    _shot_showing(browser, "dashboard-sweep.png", "#leaderboard")
    _shot_showing(
        browser,
        "dashboard-sweep-objective.png",
        "#objective-charts",
        "#objective-1",
        colors={
            "#objective-0 .uplot canvas": ["#1f77b4", "#d62728"],
            "#objective-1 .uplot canvas": ["#1f77b4", "#d62728"],
        },
    )
    _shot_showing(browser, "dashboard-sweep-pruned.png", "#pruned-trials")
    _no_errors(browser)


def _points(driver: webdriver.Chrome, chart_id: str) -> int | None:
    return (_chart(driver, chart_id) or {}).get("points")


# -- a dataset and its runs ---------------------------------------------------------------------


def test_dataset_page_lists_its_runs(stack: Stack, world: dict, browser: webdriver.Chrome) -> None:
    blobs = world["blobs"]
    want = {r["id"] for r in _all_runs(stack) if r["dataset_id"] == blobs["id"]}
    assert len(want) == 3 + 10
    browser.get(stack.base_url + "/#/datasets")
    link = f'#datasets-table tr[data-dataset-id="{blobs["id"]}"] a'
    _wait(browser, "the dataset's link", lambda d: d.find_elements(By.CSS_SELECTOR, link))
    _click(browser, link)
    _wait(
        browser, "the dataset page", lambda d: d.current_url.endswith(f"#/datasets/{blobs['id']}")
    )
    _wait(browser, "its runs", lambda d: set(_rows(d, "#dataset-runs tr[data-run-id]")) == want)
    assert _text(browser, "h1") == "blobs"
    assert "classification" in (_text(browser, "#dataset-meta") or "")
    assert world["early"]["id"] not in _rows(browser, "#dataset-runs tr[data-run-id]")
    # From a run's page, its dataset is a link to this page.
    browser.get(f"{stack.base_url}/#/runs/{world['sgd']['id']}")
    _wait(browser, "the run's meta", lambda d: _attr(d, "#run-meta a", "href"))
    assert _attr(browser, "#run-meta a", "href") == f"#/datasets/{blobs['id']}"
    browser.get(f"{stack.base_url}/#/datasets/{blobs['id']}")
    _wait(
        browser, "its runs again", lambda d: set(_rows(d, "#dataset-runs tr[data-run-id]")) == want
    )
    _shot_showing(browser, "dashboard-dataset.png", "#dataset-meta", "#dataset-runs")
    _no_errors(browser)
