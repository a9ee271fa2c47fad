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
                await _refuse(send, shown, setting)
                return

        received = 0
        started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not started:
                    # Answer now and tell the app the client went away, so it stops.
                    refused = True
                    await _refuse(send, shown, setting)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; whatever the app says now is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not refused:
                raise
            # The app failed only because its body was cut off; the client has its 413.


async def _refuse(send: Send, limit: int, setting: str) -> None:
    detail = f"request body is larger than the limit of {limit} bytes ({setting})"
    await send_error(send, 413, detail, close=True)


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
