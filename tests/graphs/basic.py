"""Small graphs the test suite serves: each exercises one behaviour of the server."""

from __future__ import annotations

import asyncio
import operator
import os
import signal
from typing import Annotated, Any, TypedDict

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph, add_messages
from langgraph.store.base import BaseStore
from langgraph.types import interrupt
from langgraph_sdk.runtime import ServerRuntime


class EchoState(TypedDict, total=False):
    value: Any
    env: str


async def _echo(state: EchoState) -> EchoState:
    return {"value": state.get("value"), "env": os.environ.get("AGENTD_TEST_ENV", "")}


echo = StateGraph(EchoState).add_node("echo", _echo).add_edge(START, "echo").compile()


class FailState(TypedDict, total=False):
    message: str
    kind: str


async def _fail(state: FailState) -> FailState:
    if state.get("kind") == "timeout":
        raise TimeoutError(state.get("message") or "slow upstream")
    raise ValueError(state.get("message") or "kaboom")


fail = StateGraph(FailState).add_node("fail", _fail).add_edge(START, "fail").compile()


class StepsState(TypedDict, total=False):
    done: Annotated[list[str], operator.add]
    delay: float
    marker: str


def _mark(marker: str | None, line: str) -> None:
    if marker:
        with open(marker, "a") as f:
            f.write(line + "\n")


def _step(name: str):
    async def node(state: StepsState) -> StepsState:
        delay = state.get("delay") or 0
        marker = state.get("marker")
        # An external record of every execution of this node, so tests can count them.
        _mark(marker, f"{name}:start")
        await asyncio.sleep(delay)
        _mark(marker, f"{name}:end")
        return {"done": [name]}

    return node


steps = (
    StateGraph(StepsState)
    .add_node("a", _step("a"))
    .add_node("b", _step("b"))
    .add_node("c", _step("c"))
    .add_edge(START, "a")
    .add_edge("a", "b")
    .add_edge("b", "c")
    .add_edge("c", END)
    .compile()
)


class AppendState(TypedDict, total=False):
    items: Annotated[list[Any], operator.add]


async def _appended(state: AppendState) -> AppendState:
    return {}


# The input goes through the reducer: a thread's `items` lists its runs' inputs in the order
# they ran. One node that writes nothing, so a run costs as little as a run can.
append = StateGraph(AppendState).add_node("note", _appended).add_edge(START, "note").compile()


class AskState(TypedDict, total=False):
    question: str
    answer: Any


async def _ask(state: AskState) -> AskState:
    answer = interrupt({"question": state.get("question", "ok?")})
    return {"answer": answer}


ask = StateGraph(AskState).add_node("ask", _ask).add_edge(START, "ask").compile()


class FactoryState(TypedDict, total=False):
    value: Any
    model: str


def make_graph(config: RunnableConfig):
    """A graph factory: what it builds depends on the run's config."""
    model = (config.get("configurable") or {}).get("model", "default")

    async def node(state: FactoryState) -> FactoryState:
        return {"value": state.get("value"), "model": model}

    return StateGraph(FactoryState).add_node("n", node).add_edge(START, "n").compile()


uncompiled = StateGraph(EchoState).add_node("echo", _echo).add_edge(START, "echo")


class RuntimeState(TypedDict, total=False):
    value: Any
    access: str
    has_store: bool
    model: str


async def make_graph_with_runtime(config: RunnableConfig, runtime: ServerRuntime):
    """A factory taking the config and the server runtime (the official factory signature)."""
    model = (config.get("configurable") or {}).get("model", "default")
    access = runtime.access_context
    has_store = isinstance(runtime.store, BaseStore)

    async def node(state: RuntimeState) -> RuntimeState:
        return {"value": state.get("value"), "access": access, "has_store": has_store,
                "model": model}  # fmt: skip

    return StateGraph(RuntimeState).add_node("n", node).add_edge(START, "n").compile()


class CrashState(TypedDict, total=False):
    value: Any


async def _crash(state: CrashState) -> CrashState:
    # Takes its whole server process down, as a segfaulting extension or an OOM kill would.
    os.kill(os.getpid(), signal.SIGKILL)
    return state


crash = StateGraph(CrashState).add_node("crash", _crash).add_edge(START, "crash").compile()


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


async def _chat(state: ChatState) -> ChatState:
    # A model that streams its answer word by word, as a real chat model streams tokens.
    last = state["messages"][-1].content if state.get("messages") else ""
    model = GenericFakeChatModel(messages=iter([AIMessage(content=f"you said {last} ok")]))
    return {"messages": [await model.ainvoke(state.get("messages") or [])]}


chat = StateGraph(ChatState).add_node("chat", _chat).add_edge(START, "chat").compile()


class NestedState(TypedDict, total=False):
    done: Annotated[list[str], operator.add]


async def _inner(state: NestedState) -> NestedState:
    get_stream_writer()({"progress": "inner"})
    return {"done": ["inner"]}


_child = StateGraph(NestedState).add_node("inner", _inner).add_edge(START, "inner").compile()
nested = (
    StateGraph(NestedState)
    .add_node("child", _child)
    .add_node("after", lambda state: {"done": ["after"]})
    .add_edge(START, "child")
    .add_edge("child", "after")
    .compile()
)


class ReviewState(TypedDict, total=False):
    draft: str
    approved: Any
    notes: Annotated[list[str], operator.add]


async def _review_a(state: ReviewState) -> ReviewState:
    return {"approved": interrupt({"check": "a"}), "notes": ["a"]}


async def _review_b(state: ReviewState) -> ReviewState:
    return {"notes": [f"b:{interrupt({'check': 'b'})}"]}


async def _publish(state: ReviewState) -> ReviewState:
    return {"notes": ["published"]}


# Two interrupts in one step (parallel nodes): resumed together by a map of interrupt ids.
review = (
    StateGraph(ReviewState)
    .add_node("review_a", _review_a)
    .add_node("review_b", _review_b)
    .add_node("publish", _publish)
    .add_edge(START, "review_a")
    .add_edge(START, "review_b")
    .add_edge(["review_a", "review_b"], "publish")
    .compile()
)
