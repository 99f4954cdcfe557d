"""A graph that streams a lot: the memory-bound tests of streams use it."""

from __future__ import annotations

import asyncio
from typing import TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import START, StateGraph


class FloodState(TypedDict, total=False):
    count: int  # custom events to write
    size: int  # bytes of filler in each
    pause_every: int  # sleep `pause` seconds after this many events (0: never)
    pause: float
    written: int


async def _flood(state: FloodState) -> FloodState:
    """Writes ``count`` custom events ``{"i": n, "fill": "x" * size}``, yielding to the event
    loop between them as a model streaming tokens does."""
    write = get_stream_writer()
    count, fill = state.get("count", 0), "x" * state.get("size", 0)
    pause_every, pause = state.get("pause_every", 0), state.get("pause", 0.0)
    for i in range(count):
        write({"i": i, "fill": fill})
        if pause_every and (i + 1) % pause_every == 0:
            await asyncio.sleep(pause)
        else:
            await asyncio.sleep(0)
    return {"written": count}


flood = StateGraph(FloodState).add_node("flood", _flood).add_edge(START, "flood").compile()
