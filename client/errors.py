"""Errors raised by the Backprop Service client."""

from __future__ import annotations

from typing import Any


class BackpropError(Exception):
    """The server answered with an error status; ``detail`` is its ``{"detail": ...}``.

    ``status_code`` is the HTTP status (e.g. 404, 409, 422), or None when no answer came
    (see :class:`BackpropConnectionError`).
    """

    def __init__(self, status_code: int | None, detail: Any) -> None:
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail

    def __str__(self) -> str:
        detail = self.detail if isinstance(self.detail, str) else repr(self.detail)
        if self.status_code is None:
            return detail
        return f"HTTP {self.status_code}: {detail}"


class BackpropConnectionError(BackpropError):
    """The server could not be reached (refused, DNS, timeout, connection dropped)."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, detail)
