"""A small Server-Sent Events reader for tests (the format, not a library under test)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Event:
    event: str
    id: str | None
    data: Any


def read_events(
    client: httpx.Client,
    url: str,
    *,
    last_event_id: str | None = None,
    max_events: int | None = None,
    timeout: float = 60,
    sink: list[Event] | None = None,
) -> list[Event]:
    """Read events until the server closes the stream or ``max_events`` arrived.

    Events are appended to ``sink`` (a list another thread may watch) as they arrive.
    """
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[Event] = sink if sink is not None else []
    fields: dict[str, str] = {}
    data_lines: list[str] = []
    with client.stream("GET", url, headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line == "":
                if data_lines:
                    raw = "\n".join(data_lines)
                    events.append(
                        Event(fields.get("event", "message"), fields.get("id"), json.loads(raw))
                    )
                    if max_events is not None and len(events) >= max_events:
                        return events
                fields, data_lines = {}, []
                continue
            if line.startswith(":"):
                continue  # keep-alive comment
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data_lines.append(value)
            else:
                fields[name] = value
    return events
