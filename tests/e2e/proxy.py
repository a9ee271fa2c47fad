"""A TCP proxy that a test can cut and restore: a database outage on demand.

While cut, every connection fails: each new one is reset as soon as it is accepted, and
every connection open at the moment of the cut has been reset on both sides. That is what
a client sees when its database server goes away.

The listener stays open the whole time. Closing it to cut does not work on Linux: a
thread blocked in ``accept()`` keeps the closed socket listening until one more client
arrives, and that client is let through (and the port is not free to listen on again).
"""

from __future__ import annotations

import socket
import struct
import threading

# SO_LINGER on, timeout 0: close() sends a reset instead of a graceful FIN.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def _drop(sock: socket.socket) -> None:
    """Break a connection another thread may be blocked on: shutdown() wakes that thread
    (close() would not) and the peer sees the end; the thread then closes the socket,
    which, lingering 0 s, resets it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reset(sock: socket.socket) -> None:
    """Refuse a connection no other thread uses: close it with RST alone (no FIN first),
    so the client's next read or write fails at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    except OSError:
        pass
    sock.close()


class _Pair:
    """One piped connection: the client's socket and its upstream socket."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.open_pipes = 2  # the last pipe thread to end closes both sockets


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0  # connections accepted, piped or not
        self.piped = 0  # connections piped to the target
        self._listener: socket.socket | None = None
        self._cut = False
        self._closed = False
        self._pairs: set[_Pair] = set()
        # Held while a connection is registered and while cut() drops them all, so no
        # connection can start piping once cut() has returned.
        self._lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    def cut(self) -> None:
        """From now until restore(), refuse every connection; drop every open one now."""
        with self._lock:
            self._cut = True
            for pair in self._pairs:
                # Both peers see the end now; the pipe threads wake and close the sockets.
                _drop(pair.client)
                _drop(pair.upstream)

    def restore(self) -> None:
        """Pipe connections again (the ones dropped by the cut stay dropped)."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Drop every connection and stop listening for good."""
        self.cut()
        self._closed = True
        if self._listener is not None:
            try:
                # Wakes the thread blocked in accept(), which then closes the listener
                # (close() from here would not wake it).
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._accept_thread is not None:
            self._accept_thread.join(5)

    def __enter__(self) -> CuttableProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        assert self._listener is not None
        with self._listener:
            self._accept_loop(self._listener)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            if self._cut or self._closed:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            pair = _Pair(client, upstream)
            with self._lock:
                if self._cut or self._closed:  # cut while connecting upstream
                    _reset(client)
                    _reset(upstream)
                    continue
                self._pairs.add(pair)
                self.piped += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(pair, src, dst), daemon=True).start()

    def _pipe(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._cut and (data := src.recv(65536)):
                if self._cut:
                    break  # bytes read just before a cut are not passed on
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            pair.open_pipes -= 1
            last = pair.open_pipes == 0
            if last:
                self._pairs.discard(pair)
        # One direction ended: end the other too (a database connection is not half-closed).
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if last:
            pair.client.close()
            pair.upstream.close()
