"""Sleep graph for the benchmark: one async node that sleeps 0.2 s, then echoes its input."""

import asyncio
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

SLEEP_SECONDS = 0.2


class SleepState(TypedDict):
    value: Any


async def nap(state: SleepState) -> SleepState:
    await asyncio.sleep(SLEEP_SECONDS)
    return {"value": state["value"]}


builder = StateGraph(SleepState)
builder.add_node("nap", nap)
builder.add_edge(START, "nap")
builder.add_edge("nap", END)
graph = builder.compile()
