"""A minimal ``text/event-stream`` parser (the Server-Sent Events wire format).

Lines are ``field: value``; a blank line ends an event; lines starting with ``:`` are
comments (keep-alives). An event that is cut off before its blank line is never dispatched,
so a dropped connection can lose only an event the server will send again on resume.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass
class RawEvent:
    """One dispatched event: its type, id and data text (several ``data:`` lines joined)."""

    event: str = "message"
    id: str | None = None
    data: str = ""
    retry_ms: int | None = None


@dataclass
class _Pending:
    event: str = "message"
    id: str | None = None
    data: list[str] = field(default_factory=list)
    retry_ms: int | None = None


def iter_sse(lines: Iterable[str]) -> Iterator[RawEvent]:
    """Yield the events in ``lines`` (text lines without their line endings)."""
    pending = _Pending()
    for line in lines:
        if line == "":
            if pending.data:
                yield RawEvent(pending.event, pending.id, "\n".join(pending.data), pending.retry_ms)
            pending = _Pending()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            pending.data.append(value)
        elif name == "event":
            pending.event = value
        elif name == "id" and "\0" not in value:
            pending.id = value
        elif name == "retry" and value.isdigit():
            pending.retry_ms = int(value)
    # End of input: an unfinished event is dropped, as the SSE specification requires.
