"""Slow graph for the soak: one async node that sleeps 2 s, then echoes its input.

Long enough that a cancel sent once the run is `running` lands while it is still running,
however slow the server answers under load."""

import asyncio
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

SLEEP_SECONDS = 2.0


class SlowState(TypedDict):
    value: Any


async def nap(state: SlowState) -> SlowState:
    await asyncio.sleep(SLEEP_SECONDS)
    return {"value": state["value"]}


builder = StateGraph(SlowState)
builder.add_node("nap", nap)
builder.add_edge(START, "nap")
builder.add_edge("nap", END)
graph = builder.compile()
