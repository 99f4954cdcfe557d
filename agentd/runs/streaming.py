"""LangGraph stream chunks -> wire events, which modes a client sees, and how a run's events
reduce to the one JSON body that ``wait`` and ``join`` return."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agentd import serde

# Wire stream modes -> the LangGraph stream modes that produce them.
_LANGGRAPH_MODE = {
    "values": "values",
    "updates": "updates",
    "messages-tuple": "messages",
    "custom": "custom",
    "debug": "debug",
    "tasks": "tasks",
    "checkpoints": "checkpoints",
}
# Wire stream modes -> the event names (before any "|namespace") a client of that mode sees.
_EVENT_NAMES = {
    "values": ("values",),
    "updates": ("updates",),
    "messages-tuple": ("messages",),
    "custom": ("custom",),
    "debug": ("debug",),
    "tasks": ("tasks",),
    "checkpoints": ("checkpoints",),
}
SUPPORTED_MODES = frozenset(_LANGGRAPH_MODE)
ALWAYS_SENT = ("metadata", "error")


def langgraph_modes(stream_modes: Iterable[str]) -> list[str]:
    # "values" is always computed: it is what wait/join return and what the thread keeps.
    modes = {"values"}
    modes.update(_LANGGRAPH_MODE[m] for m in stream_modes if m in _LANGGRAPH_MODE)
    return sorted(modes)


def visible_events(stream_modes: Iterable[str]) -> frozenset[str]:
    names = set(ALWAYS_SENT)
    for mode in stream_modes:
        names.update(_EVENT_NAMES.get(mode, ()))
    return frozenset(names)


def event_visible(event: str, visible: frozenset[str]) -> bool:
    return event.split("|", 1)[0] in visible


def to_event(mode: str, chunk: Any, namespace: tuple[str, ...] = ()) -> tuple[str, bytes]:
    """One LangGraph chunk as an SSE event (name, JSON data)."""
    name = mode
    if namespace:
        name = f"{mode}|{'|'.join(namespace)}"
    if mode == "messages":
        message, metadata = chunk
        return name, serde.dumps([message, metadata])
    return name, serde.dumps(chunk)


class Reducer:
    """Folds a run's events into the body of ``wait``/``join``: the error if one happened,
    else the last root ``values`` chunk (which carries ``__interrupt__`` when paused)."""

    def __init__(self) -> None:
        self.values: bytes | None = None
        self.error: bytes | None = None

    def add(self, event: str, data: bytes) -> None:
        if event == "values":
            self.values = data
        elif event == "error":
            self.error = data

    def body(self) -> bytes | None:
        if self.error is not None:
            return b'{"__error__":' + self.error + b"}"
        return self.values
