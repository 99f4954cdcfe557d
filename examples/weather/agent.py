"""The weather agent from the LangGraph docs: a ReAct loop with one weather search tool.

Served as graph "agent" (see langgraph.json). The model is picked at import time:
ANTHROPIC_API_KEY -> ChatAnthropic, else OPENAI_API_KEY -> ChatOpenAI, else the offline
ScriptedWeatherModel. AGENTD_EXAMPLE_MODEL overrides the model name of either provider.
"""

from __future__ import annotations

import os
import re

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

# Importable as a top-level module because langgraph.json's `"dependencies": ["."]` puts this
# directory on sys.path, as the official server does.
from offline_model import ScriptedWeatherModel


@tool
def search_weather(query: str) -> str:
    """Search for the current weather, e.g. query="weather in san francisco"."""
    # Canned, network-free answers (the same ones the LangGraph docs' templates use).
    words = re.findall(r"[a-z]+", query.lower())
    if "sf" in words or "san francisco" in " ".join(words):
        return "It's 60 degrees and foggy."
    return "It's 90 degrees and sunny."


TOOLS = [search_weather]


def choose_model() -> BaseChatModel:
    name = os.environ.get("AGENTD_EXAMPLE_MODEL")
    # Provider packages are imported lazily so the offline path needs neither installed.
    if os.environ.get("ANTHROPIC_API_KEY"):
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(model_name=name or "claude-haiku-4-5")  # type: ignore[call-arg]
    if os.environ.get("OPENAI_API_KEY"):
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(model=name or "gpt-4.1-mini")
    return ScriptedWeatherModel()


def build_graph(model: BaseChatModel) -> CompiledStateGraph:
    # Hand-built rather than langgraph.prebuilt.create_react_agent, which is deprecated in
    # langgraph 1.x; node names "agent"/"tools" match it, so checkpoints look the same.
    bound = model.bind_tools(TOOLS)

    async def agent(state: MessagesState) -> dict[str, list[AnyMessage]]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(TOOLS))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile()


graph = build_graph(choose_model())
