"""The cuttable proxy in front of the real PostgreSQL: a cut is a real outage.

The outage tests rely on this: while cut, no connection through the proxy works (not the
first new one, not an old one), and after restore() connecting works again.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.e2e.proxy import CuttableProxy
from tests.e2e.stack import wait_for

# Long enough that a hang (rather than a refusal) would show as a slow failure.
CONNECT_TIMEOUT_S = 10
# A refused or reset connection fails in milliseconds; allow a loaded machine plenty.
FAILS_FAST_S = 2.0


@pytest.fixture
def proxy(pg_server_url: str) -> Iterator[CuttableProxy]:
    url = make_url(pg_server_url)
    with CuttableProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def proxied_url(pg_server_url: str, proxy: CuttableProxy) -> str:
    url = make_url(pg_server_url).set(drivername="postgresql", port=proxy.port)
    return url.render_as_string(hide_password=False)


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


def _select_1(url: str) -> int:
    with _connect(url) as conn:
        row = conn.execute("SELECT 1").fetchone()
        assert row is not None
        return int(row[0])


def _assert_refused(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        _select_1(url)
    assert time.monotonic() - started < FAILS_FAST_S, "the connection hung instead of failing"


def test_cut_refuses_every_new_connection_and_drops_open_ones(
    proxy: CuttableProxy, proxied_url: str
) -> None:
    assert _select_1(proxied_url) == 1
    idle = _connect(proxied_url)
    in_transaction = psycopg.connect(proxied_url, connect_timeout=CONNECT_TIMEOUT_S)
    in_transaction.execute("SELECT 1")  # a transaction is open now
    assert proxy.open_connections == 2

    proxy.cut()
    # The first connection right after the cut is refused, and so is every later one.
    for _ in range(5):
        _assert_refused(proxied_url)
    time.sleep(0.3)
    for _ in range(3):
        _assert_refused(proxied_url)
    # Connections open before the cut are gone: their next statement fails.
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        in_transaction.execute("SELECT 1")
    assert idle.closed and in_transaction.closed
    wait_for(lambda: proxy.open_connections == 0, 5, "the proxy to let go of old sockets")
    assert proxy.accepted >= 3 + 8 and proxy.piped == 3, "a connection was piped while cut"

    proxy.restore()
    assert _select_1(proxied_url) == 1
    with _connect(proxied_url) as conn:
        # A big result passes through whole.
        row = conn.execute("SELECT repeat('x', 3000000)").fetchone()
        assert row is not None and row[0] == "x" * 3_000_000
    wait_for(lambda: proxy.open_connections == 0, 5, "closed connections to be let go")


def test_cut_while_clients_keep_connecting(proxy: CuttableProxy, proxied_url: str) -> None:
    """No connection that starts after cut() has returned gets through, however the cut
    falls among connections being accepted, connected upstream and piped."""
    stop = threading.Event()
    cut_done_at: list[float] = []
    got_through_after_cut: list[float] = []
    successes = [0]

    def hammer() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                _select_1(proxied_url)
            except psycopg.OperationalError:
                continue
            successes[0] += 1
            if cut_done_at and started > cut_done_at[0]:
                got_through_after_cut.append(started - cut_done_at[0])

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: successes[0] >= 10, 30, "connections through the proxy")
    proxy.cut()
    cut_done_at.append(time.monotonic())
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(CONNECT_TIMEOUT_S + 5)
    assert got_through_after_cut == [], "connections went through while cut"
    before_restore = successes[0]
    proxy.restore()
    assert _select_1(proxied_url) == 1
    assert successes[0] == before_restore


def test_cut_resets_raw_tcp_connections_at_once(proxy: CuttableProxy) -> None:
    """At the TCP level: a new connection is reset as soon as the proxy accepts it, and an
    open one is reset at the cut."""
    open_before = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    wait_for(lambda: proxy.open_connections == 1, 5, "the connection to be piped")
    proxy.cut()
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(3):  # the reset may show on the first call or on a later one
            assert open_before.recv(1) == b""
            open_before.sendall(b"\0" * 8)
    open_before.close()
    for _ in range(3):
        started = time.monotonic()
        # Reset so soon that connect() itself may report it, else the first read does.
        with pytest.raises(ConnectionResetError):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                sock.recv(1)
        assert time.monotonic() - started < FAILS_FAST_S
    proxy.restore()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        wait_for(lambda: proxy.open_connections == 1, 5, "the connection to be piped")


def test_cut_and_restore_again_and_again(proxy: CuttableProxy, proxied_url: str) -> None:
    for _ in range(5):
        conn = _connect(proxied_url)
        proxy.cut()
        _assert_refused(proxied_url)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        proxy.restore()
        assert _select_1(proxied_url) == 1
    assert proxy.piped == 5 * 2
