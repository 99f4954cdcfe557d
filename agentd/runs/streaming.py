"""LangGraph stream chunks -> wire events, which events a client of given modes sees, and how
a run's events reduce to the one JSON body that ``wait`` and ``join`` return."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message

from agentd import serde

# Wire stream modes -> the LangGraph stream mode that produces them ("events" is not one:
# it comes from astream_events).
_LANGGRAPH_MODE = {
    "values": "values",
    "updates": "updates",
    "messages": "messages",
    "messages-tuple": "messages",
    "custom": "custom",
    "debug": "debug",
    "tasks": "tasks",
    "checkpoints": "checkpoints",
}
_MESSAGE_EVENTS = ("messages/metadata", "messages/partial", "messages/complete")
# Wire stream modes -> the event names (before any "|namespace") a client of that mode sees.
_EVENT_NAMES = {
    "values": ("values",),
    "updates": ("updates",),
    "messages": _MESSAGE_EVENTS,
    "messages-tuple": ("messages",),
    "custom": ("custom",),
    "debug": ("debug",),
    "tasks": ("tasks",),
    "checkpoints": ("checkpoints",),
    "events": ("events",),
}
SUPPORTED_MODES = frozenset(_EVENT_NAMES)
ALWAYS_SENT = ("metadata", "error")


def langgraph_modes(stream_modes: Iterable[str]) -> list[str]:
    # "values" is always computed: it is what wait/join return and what the thread keeps.
    modes = {"values"}
    modes.update(_LANGGRAPH_MODE[m] for m in stream_modes if m in _LANGGRAPH_MODE)
    return sorted(modes)


def visible_events(stream_modes: Iterable[str], *, join_filter: bool = False) -> frozenset[str]:
    """The event names a client of ``stream_modes`` sees. As a join's filter, ``messages`` and
    ``messages-tuple`` each stand for every message event, and ``metadata`` is only sent when
    listed (as the official server does)."""
    modes = set(stream_modes)
    names: set[str] = {"error"} if join_filter else set(ALWAYS_SENT)
    if join_filter and modes & {"messages", "messages-tuple"}:
        modes |= {"messages", "messages-tuple"}
    for mode in modes:
        names.update(_EVENT_NAMES.get(mode, (mode,)))
    return frozenset(names)


def event_visible(event: str, visible: frozenset[str]) -> bool:
    return event.split("|", 1)[0] in visible


class EventEncoder:
    """One run's LangGraph chunks as SSE events (name, JSON data). Keeps the state the
    ``messages`` mode needs: each message's accumulated chunks, and which ids were announced."""

    def __init__(self, stream_modes: Iterable[str]):
        modes = set(stream_modes)
        self._tuples = "messages-tuple" in modes
        self._accumulate = "messages" in modes
        self._messages: dict[str, BaseMessage] = {}
        # Accumulating messages needs every chunk, whether or not anyone listens yet.
        self.stateful = self._accumulate

    def encode(
        self, mode: str, chunk: Any, namespace: tuple[str, ...] = ()
    ) -> list[tuple[str, bytes]]:
        suffix = f"|{'|'.join(namespace)}" if namespace else ""
        if mode != "messages":
            return [(mode + suffix, serde.dumps(chunk))]
        message, metadata = chunk
        events: list[tuple[str, bytes]] = []
        if self._tuples:
            events.append(("messages" + suffix, serde.dumps([message, metadata])))
        if self._accumulate and isinstance(message, BaseMessage):
            events.extend(self._accumulated(message, metadata, suffix))
        return events

    def _accumulated(
        self, message: BaseMessage, metadata: Any, suffix: str
    ) -> list[tuple[str, bytes]]:
        events: list[tuple[str, bytes]] = []
        key = message.id or ""
        seen = self._messages.get(key)
        if seen is None:
            events.append(
                ("messages/metadata" + suffix, serde.dumps({key: {"metadata": metadata}}))
            )
        if isinstance(message, BaseMessageChunk):
            total = seen + message if isinstance(seen, BaseMessageChunk) else message
            self._messages[key] = total
            whole = message_chunk_to_message(total)
            events.append(("messages/partial" + suffix, serde.dumps([whole])))
        else:
            self._messages[key] = message
            events.append(("messages/complete" + suffix, serde.dumps([message])))
        return events


def split_item(item: Any) -> tuple[tuple[str, ...], str, Any]:
    """A LangGraph stream item ((ns, mode, chunk) with subgraphs, else (mode, chunk))."""
    if len(item) == 3:
        return tuple(item[0]), item[1], item[2]
    return (), item[0], item[1]


class Reducer:
    """Folds a run's events into the body of ``wait``/``join``: the error if one happened,
    else the last root ``values`` chunk, carrying every interrupt of the step it paused at
    (LangGraph sends one chunk per interrupt when parallel nodes pause together)."""

    def __init__(self) -> None:
        self.values: bytes | None = None
        self.error: bytes | None = None
        self._interrupts: list[Any] = []

    def add(self, event: str, data: bytes) -> None:
        if event == "values":
            if b'"__interrupt__"' in data:
                chunk = serde.loads(data)
                if isinstance(chunk, dict) and isinstance(chunk.get("__interrupt__"), list):
                    self._interrupts += chunk["__interrupt__"]
                    chunk["__interrupt__"] = self._interrupts
                    data = serde.dumps(chunk)
            else:
                self._interrupts = []
            self.values = data
        elif event == "error":
            self.error = data

    def body(self) -> bytes | None:
        if self.error is not None:
            return b'{"__error__":' + self.error + b"}"
        return self.values
