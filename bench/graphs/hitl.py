"""Human-in-the-loop graph for the soak: one node that pauses at ``interrupt()`` with the input,
and once resumed (``Command(resume=answer)``) makes the answer the new state.

A first run ends ``success`` with the thread ``interrupted`` and ``__interrupt__`` in its
result; the resume ends ``success`` with the thread ``idle`` and ``{"value": answer}``."""

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class HitlState(TypedDict):
    value: Any


def ask(state: HitlState) -> HitlState:
    answer = interrupt({"question": state["value"]})
    return {"value": answer}


builder = StateGraph(HitlState)
builder.add_node("ask", ask)
builder.add_edge(START, "ask")
builder.add_edge("ask", END)
graph = builder.compile()
