"""Echo graph for the benchmark: one node that returns its input unchanged.

The state is a single last-value key, so reusing a thread never grows the state.
"""

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph


class EchoState(TypedDict):
    value: Any


def echo(state: EchoState) -> EchoState:
    return {"value": state["value"]}


builder = StateGraph(EchoState)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
graph = builder.compile()
