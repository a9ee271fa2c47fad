"""End to end: the web dashboard in a real browser (Debian's Chromium driven by Selenium).

The real API and worker train a run while headless Chromium shows it: the run appears in
the runs list and its progress moves, its page draws the learning curves and they gain
points live over SSE (read from the chart's ``data-points`` at two moments), the spec and
config are shown, cancelling from the page ends the stream with every epoch drawn once, and
the datasets page lists the dataset. Screenshots go to ``artifacts/`` for a human to look at.

Chromium and chromedriver must be installed (``apt-get install chromium chromium-driver``;
``.ci/run`` does it); without them these tests FAIL, they are never skipped. A second stack
with authentication on checks that the key typed into the page authorises everything,
the SSE stream included (read with fetch, since EventSource cannot send headers).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.browser import chromium
from tests.e2e.conftest import E2E_ENV
from tests.e2e.stack import PYTHON, Stack, start_stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
NETWORK = {
    "input_dim": 2,
    "layers": [
        {"units": 16, "activation": "tanh"},
        {"units": 2, "activation": "softmax"},
    ],
}
TRAINING = {
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "sgd", "learning_rate": 0.002, "momentum": 0.9},
    "epochs": 100_000,
    "batch_size": 1,
    "shuffle": True,
    "seed": 3,
    "validation_split": 0.2,
    "standardize": True,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One backend is enough here: the page only talks to the public API."""
    workdir: Path = tmp_path_factory.mktemp("stack-dashboard")
    stack = start_stack(f"sqlite:///{workdir / 'backprop.db'}", workdir, **E2E_ENV)
    yield stack
    stack.stop()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


def _moons(n: int, seed: int) -> tuple[list[list[float]], list[str]]:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, size=n)
    upper = rng.integers(0, 2, size=n).astype(bool)
    X = np.where(
        upper[:, None],
        np.stack([np.cos(t), np.sin(t)], axis=1),
        np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1),
    )
    X = X + rng.normal(0, 0.15, size=X.shape)
    X = X * [30.0, 0.5] + [200.0, -4.0]  # far from standardised, so standardize matters
    return X.tolist(), ["upper" if u else "lower" for u in upper]


def _wait(driver: webdriver.Chrome, what: str, predicate, timeout: float = 30):  # type: ignore[no-untyped-def]
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate(d))
    except TimeoutException:
        logs = "\n".join(str(e) for e in driver.get_log("browser"))
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}") from None


def _chart(driver: webdriver.Chrome, chart_id: str = "chart") -> dict:
    """What the uPlot chart ``chart_id`` draws, from its data hooks: ``points`` (x values),
    ``counts`` (points per series, from its legend rows), whether its canvas exists, and the
    run page's epochs and stream state."""
    return driver.execute_script(
        """
        const chart = document.getElementById(arguments[0]);
        if (!chart) return null;
        const counts = {};
        for (const row of chart.querySelectorAll("tr.u-series[data-count]")) {
          counts[row.dataset.key] = Number(row.dataset.count);
        }
        return {points: Number(chart.dataset.points), counts,
                series: Number(chart.dataset.series),
                canvas: !!chart.querySelector(".uplot canvas"),
                epochs: window.backpropUI.epochs(), stream: window.backpropUI.stream};
        """,
        chart_id,
    )


def _text(driver: webdriver.Chrome, css: str) -> str | None:
    """Text of the first element matching ``css`` now (lists are re-rendered as they poll,
    so element references would go stale; reading in one script is atomic)."""
    return driver.execute_script(
        "const el = document.querySelector(arguments[0]); return el ? el.textContent : null;",
        css,
    )


def _attr(driver: webdriver.Chrome, css: str, name: str) -> str | None:
    """Attribute ``name`` of the first element matching ``css`` now, read in one script."""
    return driver.execute_script(
        "const el = document.querySelector(arguments[0]);"
        "return el ? el.getAttribute(arguments[1]) : null;",
        css,
        name,
    )


def _click(driver: webdriver.Chrome, css: str) -> None:
    assert driver.execute_script(
        "const el = document.querySelector(arguments[0]); if (el) el.click(); return !!el;", css
    ), f"nothing to click at {css}"


def _shot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small"
    return path


def _requests_to(driver: webdriver.Chrome, fragment: str) -> list[dict]:
    """Headers of the requests the page sent to URLs containing ``fragment`` (CDP log)."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            request = message["params"]["request"]
            if fragment in request["url"]:
                found.append(request["headers"])
    return found


def test_dashboard_follows_a_training_run_live(stack: Stack, browser: webdriver.Chrome) -> None:
    X, labels = _moons(300, seed=1)
    ds = stack.upload_json(X, labels, name="moons", task="classification")
    run = stack.submit(ds["id"], NETWORK, TRAINING, name="dashboard-moons")
    run_id = run["id"]
    base = stack.base_url

    # -- the page and its assets come from the API itself -------------------------------
    page = stack.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace('href="/docs"', "")  # nothing from elsewhere
    for asset, kind in (
        ("app.js", "javascript"),
        ("charts.js", "javascript"),
        ("style.css", "text/css"),
        ("vendor/uplot/uPlot.iife.min.js", "javascript"),
        ("vendor/uplot/uPlot.min.css", "text/css"),
    ):
        resp = stack.client.get(f"/ui/{asset}")
        assert resp.status_code == 200 and kind in resp.headers["content-type"], asset
        assert resp.headers["content-security-policy"] == page.headers["content-security-policy"]
        assert f"/ui/{asset}" in page.text, asset
    assert stack.client.get("/ui/nope.js").status_code == 404

    # -- runs list: the run appears and its progress moves ------------------------------
    browser.get(base + "/")
    row_css = f'tr[data-run-id="{run_id}"]'
    _wait(browser, "the run in the runs list", lambda d: d.find_elements(By.CSS_SELECTOR, row_css))

    def progress_text(d: webdriver.Chrome) -> str:
        return _text(d, f"{row_css} .bar-text") or ""

    _wait(browser, "the run to start", lambda d: not progress_text(d).startswith("0 /"))
    first = progress_text(browser)
    _wait(browser, "the runs list to refresh", lambda d: progress_text(d) != first, timeout=15)
    assert _text(browser, f"{row_css} .status") == "running"
    assert "dashboard-moons" in (_text(browser, row_css) or "")
    assert float(_text(browser, f'{row_css} td[data-metric="loss"]') or "nan") > 0
    _shot(browser, "dashboard-runs.png")

    # -- run page: the curves grow live over SSE ----------------------------------------
    _click(browser, f"{row_css} a")
    _wait(browser, "the run page", lambda d: d.current_url.endswith(f"#/runs/{run_id}"))
    _wait(browser, "points on the chart", lambda d: ((_chart(d) or {}).get("points") or 0) >= 3)
    before = _chart(browser)
    _wait(
        browser,
        "the chart to gain points",
        lambda d: _chart(d)["points"] >= before["points"] + 5,
        timeout=30,
    )
    after = _chart(browser)
    assert after["stream"] == "open"
    assert after["epochs"] == list(range(1, len(after["epochs"]) + 1))  # in order, no gaps
    assert len(after["epochs"]) >= after["points"] >= before["points"] + 5  # drawn lags a bit
    assert set(after["counts"]) == {"loss", "val_loss", "accuracy", "val_accuracy"}
    assert all(0 < c <= after["points"] for c in after["counts"].values()), after["counts"]
    assert after["canvas"]  # uPlot draws on a canvas

    spec = json.loads(browser.find_element(By.ID, "run-spec").text)
    assert spec["layers"] == NETWORK["layers"] and spec["input_dim"] == 2
    config = json.loads(browser.find_element(By.ID, "run-config").text)
    assert config == stack.client.get(f"/api/v1/runs/{run_id}").json()["training"]
    npz = browser.find_element(By.ID, "download-npz")
    assert npz.get_attribute("href") == f"{base}/api/v1/runs/{run_id}/weights?format=npz"
    assert _text(browser, "#run-status") == "running"
    time.sleep(0.3)  # let the pending redraw land before the picture
    _shot(browser, "dashboard-run.png")

    # -- cancel from the page: the stream ends with every epoch drawn exactly once ------
    browser.find_element(By.ID, "cancel-run").click()
    _wait(
        browser,
        "the page to show the run cancelled",
        lambda d: _text(d, "#run-status") == "cancelled" and _chart(d)["stream"] == "ended",
    )
    stored = stack.client.get(f"/api/v1/runs/{run_id}/metrics").json()["items"]
    # The drawing follows the data on the next animation frame: wait for it to catch up.
    _wait(browser, "the chart to draw every epoch",
          lambda d: _chart(d)["points"] == len(stored))  # fmt: skip
    final = _chart(browser)
    assert final["epochs"] == [item["epoch"] for item in stored]
    assert final["points"] == len(stored) > after["points"] - 1
    assert "disabled" in browser.find_element(By.ID, "download-npz").get_attribute("class")
    assert not browser.find_element(By.ID, "cancel-run").is_displayed()
    # The timeline lists every change of status with its reason, as the API records them.
    steps = stack.client.get(f"/api/v1/runs/{run_id}").json()["transitions"]
    assert [t["status"] for t in steps] == ["queued", "running", "cancelled"]
    # Read in one script: the header (timeline included) re-renders as the run is polled.
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('#run-timeline li')).map((li) =>"
        " [li.dataset.status, li.querySelector('.reason').textContent]);"
    )
    assert [status for status, _ in shown] == ["queued", "running", "cancelled"]
    assert [reason for _, reason in shown] == [step["reason"] for step in steps]
    assert shown[2][1].startswith("cancelled by its owner; stopped after epoch ")
    time.sleep(0.3)
    _shot(browser, "dashboard-run-cancelled.png")

    # -- datasets page ------------------------------------------------------------------
    browser.find_element(By.ID, "nav-datasets").click()
    ds_css = f'tr[data-dataset-id="{ds["id"]}"]'
    _wait(browser, "the dataset listed", lambda d: d.find_elements(By.CSS_SELECTOR, ds_css))
    ds_text = _text(browser, ds_css) or ""
    assert "moons" in ds_text and "classification" in ds_text and "lower, upper" in ds_text
    _shot(browser, "dashboard-datasets.png")

    # -- the API key field: stored, then sent as a bearer token -------------------------
    browser.get_log("performance")  # drop what came before
    key_input = browser.find_element(By.ID, "api-key")
    key_input.send_keys("bp_test_key_123")
    browser.find_element(By.ID, "api-key-save").click()
    assert browser.execute_script('return localStorage.getItem("backprop.apiKey")') == (
        "bp_test_key_123"
    )
    browser.get(base + "/#/")  # a fresh page load keeps the key
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == "bp_test_key_123"
    _wait(browser, "the runs list again", lambda d: d.find_elements(By.CSS_SELECTOR, row_css))
    sent = _requests_to(browser, "/api/v1/runs")
    assert sent and all(h.get("Authorization") == "Bearer bp_test_key_123" for h in sent), sent
    browser.find_element(By.ID, "api-key-clear").click()
    assert browser.execute_script('return localStorage.getItem("backprop.apiKey")') is None
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("stack-dashboard-auth")
    stack = start_stack(
        f"sqlite:///{workdir / 'backprop.db'}",
        workdir,
        **{**E2E_ENV, "BACKPROP_AUTH": "on", "BACKPROP_AUTH_CACHE_S": "0"},
    )
    yield stack
    stack.stop()


def test_dashboard_with_authentication_on(auth_stack: Stack, browser: webdriver.Chrome) -> None:
    """The key typed into the page authorises the lists, the run page and its SSE stream."""
    made = subprocess.run(
        [PYTHON, "-m", "cli", "keys", "create", "--owner", "dash", "--json"],
        env=auth_stack.env, cwd=auth_stack.workdir, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    key = json.loads(made.stdout)["key"]
    api = httpx.Client(
        base_url=auth_stack.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )
    X, labels = _moons(200, seed=2)
    ds = api.post("/api/v1/datasets", json={"X": X, "y": labels, "task": "classification"})
    assert ds.status_code == 201, ds.text
    body = {"dataset_id": ds.json()["id"], "network": NETWORK, "training": TRAINING}
    resp = api.post("/api/v1/runs", json=body)
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["id"]
    try:
        # Without a key the page loads but the API refuses, and the page says what to do.
        browser.get(auth_stack.base_url + "/")
        _wait(browser, "the 401 notice", lambda d: "API key" in (_text(d, "#notice") or ""))
        assert not browser.find_elements(By.CSS_SELECTOR, "tr[data-run-id]")

        browser.find_element(By.ID, "api-key").send_keys(key)
        browser.find_element(By.ID, "api-key-save").click()
        row_css = f'tr[data-run-id="{run_id}"]'
        _wait(browser, "the run listed", lambda d: d.find_elements(By.CSS_SELECTOR, row_css))
        _click(browser, f"{row_css} a")
        _wait(browser, "live points", lambda d: ((_chart(d) or {}).get("points") or 0) >= 3)
        before = _chart(browser)
        assert before["stream"] == "open"
        _wait(browser, "more points", lambda d: _chart(d)["points"] >= before["points"] + 3)
        assert api.post(f"/api/v1/runs/{run_id}/cancel").status_code == 202
        _wait(browser, "the stream to end", lambda d: _chart(d)["stream"] == "ended")
        stored = api.get(f"/api/v1/runs/{run_id}/metrics").json()["items"]
        assert _chart(browser)["epochs"] == [item["epoch"] for item in stored]
        assert _text(browser, "#run-status") == "cancelled"
        time.sleep(0.3)
        _shot(browser, "dashboard-run-auth.png")
    finally:
        api.post(f"/api/v1/runs/{run_id}/cancel")
        api.close()
