"""End to end: the API docs (``/docs``, Swagger UI; ``/redoc``, ReDoc) work with no internet.

A real uvicorn API serves the pages; headless Chromium (Debian's, driven by Selenium) opens
them, waits until every operation of ``/openapi.json`` is drawn (the one for
``POST /api/v1/runs`` by name), and reads the browser's network log (Chrome DevTools
``Network.requestWillBeSent`` events): every request the page made must go to the API's
own origin (``data:`` and ``blob:`` URLs aside). The pages are opened twice: at
``http://127.0.0.1:<port>`` and at a made-up host name that the browser maps to 127.0.0.1,
because the pages may behave differently on localhost (Swagger UI does, for its validator
badge). Every other name fails to resolve in the browser, so no request can leave the
machine even when the test fails. Swagger UI's "Try it out" is used once, as the pages
carry a Content-Security-Policy that must not get in its way.

Chromium and chromedriver must be installed (``make test`` sees to it); without them these
tests FAIL, they are never skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.e2e.browser import chromium
from tests.e2e.conftest import E2E_ENV
from tests.e2e.stack import Stack, start_stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
ALIAS = "backprop-docs.test"  # resolved to 127.0.0.1 by the browser alone
# The alias goes to loopback; every other name fails at once, without a DNS query.
RESOLVER_RULES = f"--host-resolver-rules=MAP {ALIAS} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
# ReDoc's "API docs by Redocly" logo is an <img> from its CDN in every ReDoc version; the
# page's Content-Security-Policy stops it in the browser (it never reaches the network)
# and ReDoc then hides the image. Any other foreign request fails the test, blocked or not.
STOPPED_BY_CSP = {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
CREATE_RUN = "create_run_api_v1_runs_post"  # operationId of POST /api/v1/runs
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API alone: the docs pages need no worker."""
    workdir: Path = tmp_path_factory.mktemp("stack-api-docs")
    stack = start_stack(f"sqlite:///{workdir / 'backprop.db'}", workdir, workers=0, **E2E_ENV)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def operations(stack: Stack) -> list[tuple[str, str, str]]:
    """(operationId, method, path) of every operation the API documents."""
    spec = stack.client.get("/openapi.json").json()
    found = [
        (op["operationId"], method, path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    assert (CREATE_RUN, "post", "/api/v1/runs") in found
    return found


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium(RESOLVER_RULES) as driver:
        yield driver


def _wait(driver: webdriver.Chrome, what: str, script: str, timeout: float = 30) -> object:
    """Poll ``script`` (JavaScript returning a value) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(str(e) for e in driver.get_log("browser"))
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
        time.sleep(0.1)


def _open(driver: webdriver.Chrome, url: str) -> None:
    """Open ``url`` in a tab cleared of the browser's start page and its log entries."""
    driver.get("about:blank")
    driver.get_log("performance")  # reading empties it
    driver.get(url)


def _log(driver: webdriver.Chrome) -> list[dict]:
    """The DevTools messages since the log was last read (reading empties it)."""
    return [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]


def _settle(driver: webdriver.Chrome) -> dict[str, tuple[str, str | None]]:
    """Every request of the page, once it has made none for a second (late fonts and
    images count too): request id -> (URL, why the browser blocked it or None)."""
    messages = _log(driver)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(1.0)
        more = _log(driver)
        if not more:
            break
        messages += more
    requests: dict[str, tuple[str, str | None]] = {}
    for message in messages:
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            requests[params["requestId"]] = (params["request"]["url"], None)
        elif message.get("method") == "Network.loadingFailed" and params.get("blockedReason"):
            url, _ = requests.get(params["requestId"], ("?", None))
            requests[params["requestId"]] = (url, params["blockedReason"])
    return requests


def _assert_same_origin(
    requests: dict[str, tuple[str, str | None]], origin: str, page: str
) -> None:
    urls = [url for url, _ in requests.values()]
    foreign = [
        (url, blocked)
        for url, blocked in requests.values()
        if not url.startswith((origin + "/", "data:", "blob:"))
        and not (url in STOPPED_BY_CSP and blocked == "csp")
    ]
    assert not foreign, f"{page} asked other origins for {foreign}"
    # The log was really read: the page, its script and the spec came from the API itself.
    assert origin + page in urls, urls
    assert origin + "/openapi.json" in urls, urls
    assert any(url.startswith(origin + "/ui/docs/") for url in urls), urls


def _refusals(driver: webdriver.Chrome) -> list[str]:
    """Console messages of Content-Security-Policy refusals, the expected one aside."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
        and not any(url in entry["message"] for url in STOPPED_BY_CSP)
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", ALIAS])
def test_swagger_ui_renders_every_operation_from_the_server_alone(
    stack: Stack,
    browser: webdriver.Chrome,
    operations: list[tuple[str, str, str]],
    host: str,
) -> None:
    origin = f"http://{host}:{stack.port}"
    _open(browser, origin + "/docs")
    create_run = '.opblock-post .opblock-summary-path[data-path="/api/v1/runs"]'
    _wait(browser, "POST /api/v1/runs in Swagger UI",
          f"return document.querySelector('{create_run}') !== null")  # fmt: skip
    drawn = _wait(
        browser,
        "every operation in Swagger UI",
        f"const n = document.querySelectorAll('.opblock').length; "
        f"return n >= {len(operations)} ? n : 0",
    )
    assert drawn == len(operations)
    paths = browser.execute_script(
        "return [...document.querySelectorAll('.opblock')].map(el => "
        "[el.querySelector('.opblock-summary-method').textContent.toLowerCase(), "
        "el.querySelector('.opblock-summary-path').dataset.path])"
    )
    assert sorted(map(tuple, paths)) == sorted((m, p) for _, m, p in operations)
    # "Try it out" works under the page's Content-Security-Policy (fetch to its own origin).
    healthz = "#operations-health-healthz_healthz_get"
    for button in (".opblock-summary-control", ".try-out__btn", ".execute"):
        _wait(browser, f"{button} of GET /healthz",
              f"const b = document.querySelector('{healthz} {button}'); "
              "if (b) b.click(); return !!b")  # fmt: skip
    status = _wait(
        browser,
        "the answer of GET /healthz in Swagger UI",
        f"const el = document.querySelector('{healthz} .live-responses-table tr.response "
        ".response-col_status'); return el ? el.textContent.trim() : null",
    )
    assert status == "200"
    _assert_same_origin(_settle(browser), origin, "/docs")
    assert not _refusals(browser)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"docs-swagger-{host}.png"))


@pytest.mark.parametrize("host", ["127.0.0.1", ALIAS])
def test_redoc_renders_every_operation_from_the_server_alone(
    stack: Stack,
    browser: webdriver.Chrome,
    operations: list[tuple[str, str, str]],
    host: str,
) -> None:
    origin = f"http://{host}:{stack.port}"
    _open(browser, origin + "/redoc")
    section = f'[data-section-id="operation/{CREATE_RUN}"]'
    text = _wait(
        browser,
        "POST /api/v1/runs in ReDoc",
        f"const el = document.querySelector('{section}'); return el ? el.textContent : null",
    )
    assert "/api/v1/runs" in str(text)
    ids = _wait(
        browser,
        "every operation in ReDoc",
        "const ids = [...document.querySelectorAll('[data-section-id^=\"operation/\"]')]"
        f".map(el => el.dataset.sectionId); return ids.length >= {len(operations)} ? ids : null",
    )
    assert sorted(set(ids)) == sorted(f"operation/{op}" for op, _, _ in operations)
    _assert_same_origin(_settle(browser), origin, "/redoc")
    assert not _refusals(browser)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"docs-redoc-{host}.png"))
