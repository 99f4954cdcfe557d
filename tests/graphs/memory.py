"""Graphs for the store and subgraph-state tests."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.config import get_store
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt


class RememberState(TypedDict, total=False):
    namespace: list[str]
    key: str
    value: dict[str, Any]
    seen: Any


async def _remember(state: RememberState, runtime: Runtime) -> RememberState:
    """Writes an item through ``runtime.store`` and reads it back through ``get_store()``."""
    namespace = tuple(state["namespace"])
    assert runtime.store is not None
    await runtime.store.aput(namespace, state["key"], state["value"])
    item = await get_store().aget(namespace, state["key"])
    return {"seen": item.value if item else None}


remember = StateGraph(RememberState).add_node("remember", _remember)
remember = remember.add_edge(START, "remember").compile()


class NestedState(TypedDict, total=False):
    topic: str
    answer: Any


async def _inner_ask(state: NestedState) -> NestedState:
    return {"answer": interrupt({"question": f"about {state.get('topic')}?"})}


inner = (
    StateGraph(NestedState).add_node("inner_ask", _inner_ask).add_edge(START, "inner_ask").compile()
)

# A subgraph as a node: while it waits on its interrupt, the parent's state has a task whose
# state is the subgraph's.
nested = StateGraph(NestedState).add_node("child", inner).add_edge(START, "child").compile()
