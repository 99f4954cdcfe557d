"""Sleep graph for the benchmark: one async node that sleeps 0.2 s, then echoes its input."""

import asyncio
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

SLEEP_SECONDS = 0.2


class SleepState(TypedDict):
    value: Any


def sleeping(seconds: float) -> CompiledStateGraph:
    """One node that sleeps ``seconds``, then echoes its input."""

    async def nap(state: SleepState) -> SleepState:
        await asyncio.sleep(seconds)
        return {"value": state["value"]}

    builder = StateGraph(SleepState)
    builder.add_node("nap", nap)
    builder.add_edge(START, "nap")
    builder.add_edge("nap", END)
    return builder.compile()


graph = sleeping(SLEEP_SECONDS)
