"""Errors raised by the Backprop Service client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_LOCATIONS = ("body", "query", "path", "header")


def field_path(loc: Sequence[Any]) -> str:
    """A 422 item's ``loc`` as people write it: ``network.layers[1].activation`` for a
    body's field, ``status (query parameter)`` for a query's."""
    parts = list(loc)
    where = parts.pop(0) if parts and parts[0] in _LOCATIONS else "body"
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    if where == "body":
        return text or "body"
    return f"{text} ({where} parameter)"


class BackpropError(Exception):
    """The server answered with an error status; ``detail`` is its ``{"detail": ...}``.

    ``status_code`` is the HTTP status (e.g. 404, 409, 422), or None when no answer came
    (see :class:`BackpropConnectionError`). :attr:`problems` says it for people.
    """

    def __init__(self, status_code: int | None, detail: Any) -> None:
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail

    @property
    def problems(self) -> list[str]:
        """The detail as lines for people: ``field.path: message`` for each invalid value
        of a 422 from request validation (with "did you mean 'tanh'?" where the server
        saw a near miss), else the server's sentence."""
        if isinstance(self.detail, list) and all(
            isinstance(item, dict) and "msg" in item for item in self.detail
        ):
            return [f"{field_path(item.get('loc') or [])}: {item['msg']}" for item in self.detail]
        return [self.detail if isinstance(self.detail, str) else repr(self.detail)]

    def __str__(self) -> str:
        detail = "; ".join(self.problems)
        if self.status_code is None:
            return detail
        return f"HTTP {self.status_code}: {detail}"


class BackpropConnectionError(BackpropError):
    """The server could not be reached (refused, DNS, timeout, connection dropped)."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, detail)
