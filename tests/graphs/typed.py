"""A graph with typed input, output and context schemas and nested subgraphs: what the
assistants' introspection endpoints (/graph, /schemas, /subgraphs) are tested on, and a node
that reports the config, context and metadata it was run with."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph_sdk.runtime import ServerRuntime
from typing_extensions import TypedDict


class Context(TypedDict, total=False):
    model: str
    temperature: float


class InputState(TypedDict):
    question: str


class OutputState(TypedDict, total=False):
    answer: str
    seen: dict[str, Any]


class OverallState(TypedDict, total=False):
    question: str
    answer: str
    seen: dict[str, Any]
    trail: Annotated[list[str], lambda a, b: a + b]


class DeepState(TypedDict, total=False):
    answer: str
    depth: int


async def _deepest(state: DeepState) -> DeepState:
    return {"answer": (state.get("answer") or "") + "!", "depth": 2}


deep = StateGraph(DeepState).add_node("deepest", _deepest).add_edge(START, "deepest").compile()


class InnerState(TypedDict, total=False):
    question: str
    answer: str


async def _think(state: InnerState) -> InnerState:
    return {"answer": f"re: {state.get('question', '')}"}


inner = (
    StateGraph(InnerState)
    .add_node("think", _think)
    .add_node("deep", deep)
    .add_edge(START, "think")
    .add_edge("think", "deep")
    .compile()
)


async def _report(state: OverallState, config: RunnableConfig, runtime: Runtime[Context]) -> Any:
    """What a run of this graph was given: the assistant's config, context and metadata
    should all arrive here."""
    return {
        "seen": {
            "context": dict(runtime.context or {}),
            "configurable": {
                k: v for k, v in (config.get("configurable") or {}).items() if not k.startswith("_")
            },
            "metadata": dict(config.get("metadata") or {}),
            "tags": list(config.get("tags") or []),
        },
        "trail": ["report"],
    }


typed = (
    StateGraph(
        OverallState, context_schema=Context, input_schema=InputState, output_schema=OutputState
    )
    .add_node("report", _report)
    .add_node("inner", inner)
    .add_edge(START, "report")
    .add_edge("report", "inner")
    .compile(name="Typed")
)


def make_typed(config: RunnableConfig, runtime: ServerRuntime):
    """A factory whose graph shows what it was built for: its node is named after the access
    context and the configured model, so a drawing of it tells both."""
    model = (config.get("configurable") or {}).get("model", "default")
    name = f"{runtime.access_context.replace('.', '_')}__{model}"

    async def node(state: InnerState) -> InnerState:
        return {"answer": name}

    return StateGraph(InnerState).add_node(name, node).add_edge(START, name).compile()
