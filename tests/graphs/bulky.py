"""Graphs for the history tests: one whose every step writes a large state (many big
checkpoints on one thread), one whose state is a DeltaChannel (rebuilt from older checkpoints
whenever it is read)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph


class BulkyState(TypedDict, total=False):
    steps: int  # how many checkpoints the run writes
    kb: int  # about how large each one is
    n: int
    rows: list[dict[str, Any]]


async def _grow(state: BulkyState) -> BulkyState:
    n = state.get("n", 0) + 1
    # Many small objects rather than one string: decoding them costs what real states do.
    rows = [{"n": n, "i": i, "text": "x" * 90} for i in range(state.get("kb", 300) * 10)]
    return {"n": n, "rows": rows}


def _again(state: BulkyState) -> str:
    return "grow" if state["n"] < state.get("steps", 1) else END


bulky = (
    StateGraph(BulkyState)
    .add_node("grow", _grow)
    .add_edge(START, "grow")
    .add_conditional_edges("grow", _again)
    .compile()
)


def _append(entries: list[str] | None, writes: Sequence[list[str]]) -> list[str]:
    return [*(entries or []), *(entry for write in writes for entry in write)]


class JournalState(TypedDict, total=False):
    steps: int
    entries: Annotated[list[str], DeltaChannel(_append, list, snapshot_frequency=3)]


async def _note(state: JournalState) -> JournalState:
    return {"entries": [f"entry {len(state.get('entries') or [])}"]}


def _more(state: JournalState) -> str:
    return "note" if len(state.get("entries") or []) < state.get("steps", 1) else END


journal = (
    StateGraph(JournalState)
    .add_node("note", _note)
    .add_edge(START, "note")
    .add_conditional_edges("note", _more)
    .compile()
)
