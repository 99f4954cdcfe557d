"""Graphs for the race tests: every node execution is written to a ledger file (run id, node,
start/end, process id), so a test can tell which runs executed, where, and how often."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph
from langgraph.types import interrupt


class LedgerState(TypedDict, total=False):
    ledger: str
    delay: float
    steps: list[str]
    answer: Any


def _record(config: RunnableConfig, ledger: str | None, node: str, event: str) -> None:
    if not ledger:
        return
    run_id = config["configurable"]["run_id"]
    # One write() per line in append mode: lines from concurrent runs never interleave.
    line = f"{run_id} {node} {event} {os.getpid()} {time.time():.6f}\n"
    with open(ledger, "a") as f:
        f.write(line)


def _step(name: str):
    async def node(state: LedgerState, config: RunnableConfig) -> LedgerState:
        _record(config, state.get("ledger"), name, "start")
        await asyncio.sleep(state.get("delay") or 0)
        _record(config, state.get("ledger"), name, "end")
        return {"steps": [*(state.get("steps") or []), name]}

    return node


# Three short steps, each a checkpoint: a cancel can land before, between or after them.
ledger = (
    StateGraph(LedgerState)
    .add_node("a", _step("a"))
    .add_node("b", _step("b"))
    .add_node("c", _step("c"))
    .add_edge(START, "a")
    .add_edge("a", "b")
    .add_edge("b", "c")
    .compile()
)


async def _ask(state: LedgerState, config: RunnableConfig) -> LedgerState:
    answer = interrupt({"question": "go on?"})
    _record(config, state.get("ledger"), "ask", "resumed")
    return {"answer": answer}


# Pauses for a human, then works for `delay` once resumed: a cancel can land on the queued
# resume, on the resume while it works, or after it.
slow_ask = (
    StateGraph(LedgerState)
    .add_node("ask", _ask)
    .add_node("work", _step("work"))
    .add_edge(START, "ask")
    .add_edge("ask", "work")
    .compile()
)
