"""JSON nesting depth limit, checked on the raw bytes before any parser sees them (ASGI).

``json.loads`` recurses once per nested array or object, so a body such as
``{"X": [[[[…`` 100,000 levels deep ends in ``RecursionError`` — a 500 where the route
parses the body itself. This middleware counts the nesting of every JSON request body
(``Content-Type`` ``application/json``, ``application/*+json``, or none: FastAPI parses
those as JSON too) while it streams in, and answers 400 naming the limit as soon as the
depth passes it. The body is then drained (so the client reads a clean answer, not a
reset connection) and the application is told the client went away.

The scan is :class:`DepthScanner`: brackets inside strings do not count, escapes are
honoured, and state carries over between chunks. It works at C speed — ``bytes.replace``
drops escapes, ``bytes.translate`` keeps only brackets and quotes, and NumPy cumulative sums
tell text from structure and find the deepest point — so a tiny request costs about a
microsecond and a 50 MB upload some tens of milliseconds, in bounded memory (a large chunk
is scanned in 1 MB slices). Bodies in UTF-16 or UTF-32 (which ``json.loads`` also accepts)
are decoded to UTF-8 for the scan.

It is not a JSON validator: malformed bodies pass through to the parser, which answers 400.
"""

from __future__ import annotations

import codecs
import json

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.limits import BodyCheck

SETTING = "BACKPROP_MAX_JSON_DEPTH"

_QUOTE = 0x22
_SLICE = 1 << 20  # a larger chunk is scanned in slices, so temporaries stay small
_NOT_SYNTAX = bytes(b for b in range(256) if b not in b'[]{}"')
_STEP = np.zeros(256, dtype=np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


def too_deep_message(limit: int) -> str:
    return f"the JSON body nests arrays/objects deeper than the limit of {limit} levels ({SETTING})"


class DepthScanner:
    """Feed a JSON body chunk by chunk; :meth:`feed` turns False once nesting passes ``limit``.

    The depth of ``[[1]]`` is 2; ``{"a": [1]}`` is 2; a scalar is 0. Escapes go first:
    escaped backslashes (pairs, from the left), then escaped quotes, are dropped, so every
    quote left opens or closes a string, and brackets after an odd count of quotes are text.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.depth = 0
        self.in_string = False
        self._backslash = False  # the last chunk ended in an unpaired backslash
        self._head = b""  # the first bytes, until the encoding is known
        self._decided = False
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, chunk: bytes, more: bool = True) -> bool:
        """Scan the next ``chunk``; ``more`` is False for the last one. False: too deep."""
        if not self._decided:
            self._head += chunk
            if len(self._head) < 4 and more:
                return True
            chunk, self._head, self._decided = self._head, b"", True
            encoding = json.detect_encoding(chunk)
            if encoding not in ("utf-8", "utf-8-sig"):
                self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        if self._decoder is not None:
            chunk = self._decoder.decode(chunk, final=not more).encode("utf-8", "replace")
        if len(chunk) <= _SLICE:
            return self._scan(chunk, last=not more)
        return all(
            self._scan(chunk[i : i + _SLICE], last=not more and i + _SLICE >= len(chunk))
            for i in range(0, len(chunk), _SLICE)
        )

    def _scan(self, data: bytes, *, last: bool) -> bool:
        if self._backslash:
            data, self._backslash = b"\\" + data, False
        if b"\\" in data:
            # UTF-8 never has these bytes inside a multi-byte character.
            data = data.replace(b"\\\\", b"")
            if data.endswith(b"\\"):  # its partner starts the next chunk
                data, self._backslash = data[:-1], True
            data = data.replace(b'\\"', b"")
        syntax = data.translate(None, _NOT_SYNTAX)
        opens = syntax.count(b"[") + syntax.count(b"{")
        if self.depth + opens <= self.limit:
            # Within the limit even if no bracket were text: only the state is left to update.
            if last:
                return True
            if not self.in_string and _QUOTE not in syntax:
                self.depth += 2 * opens - len(syntax)
                return True
        return self._count(syntax)

    def _count(self, syntax: bytes) -> bool:
        if not syntax:
            return True
        codes = np.frombuffer(syntax, dtype=np.uint8)
        steps = _STEP[codes]
        quotes = codes == _QUOTE
        if self.in_string or quotes.any():
            text = (np.cumsum(quotes, dtype=np.int32) + self.in_string) & 1
            steps[text.astype(bool)] = 0
            self.in_string = bool(text[-1])
        running = np.cumsum(steps, dtype=np.int32)
        if self.depth + int(running.max()) > self.limit:
            return False
        self.depth += int(running[-1])
        return True


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would parse this request's body as JSON (its own content-type rule)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if not media:
                return True
            main, _, sub = media.partition(b"/")
            return main == b"application" and (sub == b"json" or sub.endswith(b"+json"))
    return True


class JSONDepthLimit:
    """Answer 400 to a JSON request body nested deeper than ``max_depth``."""

    def __init__(self, app: ASGIApp, *, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        scanner = DepthScanner(self.max_depth)
        check = BodyCheck(send)

        async def scanning_receive() -> Message:
            if check.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] != "http.request" or check.started:
                return message
            more = message.get("more_body", False)
            if scanner.feed(message.get("body", b""), more):
                return message
            check.refused = True  # from here on, the app gets nothing more of the body
            while more:  # drain, so the client is not cut off while still sending
                rest = await receive()
                more = rest["type"] == "http.request" and rest.get("more_body", False)
            await check.refuse(400, too_deep_message(self.max_depth))
            return {"type": "http.disconnect"}

        await check.run(self.app, scope, scanning_receive)
