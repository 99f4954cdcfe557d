"""Marked graph for distributed.py's lease scenario: one async node that first appends
``<pid> <epoch seconds>`` to the file named by the input's ``marker`` (when given), then sleeps
``seconds`` (default 2), then echoes ``value``.

Each line is one start of the node: which worker process started it and when. A run whose
worker was killed and which another worker restarted leaves two lines with different pids."""

import asyncio
import os
import time
from typing import Any, NotRequired, TypedDict

from langgraph.graph import END, START, StateGraph


class MarkedState(TypedDict):
    value: Any
    marker: NotRequired[str]
    seconds: NotRequired[float]


def mark(path: str) -> None:
    # One short append: lines from two attempts never interleave.
    with open(path, "a") as out:
        out.write(f"{os.getpid()} {time.time():.6f}\n")


async def nap(state: MarkedState) -> dict[str, Any]:
    if marker := state.get("marker"):
        mark(marker)  # blocking, but a few microseconds: the stamp is the node's start
    await asyncio.sleep(float(state.get("seconds", 2.0)))
    return {"value": state["value"]}


builder = StateGraph(MarkedState)
builder.add_node("nap", nap)
builder.add_edge(START, "nap")
builder.add_edge("nap", END)
graph = builder.compile()
