"""Request body size limit, enforced while the body streams in (ASGI middleware).

A declared ``Content-Length`` over the limit is refused before reading anything; a body
without one (chunked) is counted as it arrives and refused as soon as it passes the limit.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATH = "/api/v1/datasets"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_request_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes

    def _limit(self, path: str) -> tuple[int, int, str]:
        """(bytes allowed, the setting's value, the setting's name) for a request path."""
        if path.rstrip("/") == UPLOAD_PATH:
            # Multipart framing adds a little around the file itself.
            return (
                self.max_upload_bytes + 65_536,
                self.max_upload_bytes,
                "BACKPROP_MAX_UPLOAD_BYTES",
            )
        return self.max_request_bytes, self.max_request_bytes, "BACKPROP_MAX_REQUEST_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, shown, setting = self._limit(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await send_error(send, 413, _too_large(shown, setting), close=True)
                return

        received = 0
        check = BodyCheck(send)

        async def counting_receive() -> Message:
            nonlocal received
            if check.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not check.started:
                    # Answer now and tell the app the client went away, so it stops.
                    await check.refuse(413, _too_large(shown, setting), close=True)
                    return {"type": "http.disconnect"}
            return message

        await check.run(self.app, scope, counting_receive)


def _too_large(limit: int, setting: str) -> str:
    return f"request body is larger than the limit of {limit} bytes ({setting})"


class BodyCheck:
    """Runs the app while a middleware checks the request body as it arrives, and lets the
    middleware answer an error in the app's stead: once refused, whatever the app still
    sends is dropped, and its failure (its body was cut off) is not an error."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False  # the app began its answer: too late to refuse
        self.refused = False

    async def refuse(self, status: int, detail: str, *, close: bool = False) -> None:
        self.refused = True
        await send_error(self._send, status, detail, close=close)

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive) -> None:
        try:
            await app(scope, receive, self.send)
        except Exception:
            if not self.refused:
                raise


async def send_error(send: Send, status: int, detail: str, *, close: bool = False) -> None:
    """Answer ``status`` with the API's error body ``{"detail": …}`` from ASGI middleware
    (``close``: and end the connection, for a body left unread)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
