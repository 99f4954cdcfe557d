"""What the assistants' introspection endpoints show of a graph: its drawing (nodes and edges
as LangGraph draws them) and the JSON schemas of its input, output, state, config and context,
all computed from the compiled graph. A schema that cannot be generated is ``None``."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from langgraph.pregel import Pregel
from pydantic import TypeAdapter, create_model

log = logging.getLogger("agentd.graph_info")

# `configurable` keys LangGraph and the server set themselves: not part of what a user configures.
_INTERNAL_CONFIG_KEYS = (
    "__pregel_resuming", "__pregel_checkpoint_id", "__pregel_checkpointer", "__pregel_store",
    "checkpoint_id", "checkpoint_ns", "thread_id",
)  # fmt: skip


async def drawing(graph: Pregel, config: dict[str, Any], xray: bool | int) -> dict[str, Any]:
    """``{"nodes": [...], "edges": [...]}``; ``xray`` draws subgraphs (to that depth if an int).
    Nodes' ``data.id`` (the Python class path of the runnable) is left out, as the reference
    server does."""
    drawn = (await graph.aget_graph(config, xray=xray)).to_json()
    for node in drawn.get("nodes", []):
        data = node.get("data")
        if isinstance(data, dict):
            data.pop("id", None)
    return drawn


def schemas(graph: Any) -> dict[str, Any]:
    """The five schemas of a graph (any of them ``None`` when it cannot be generated)."""
    makers: dict[str, Callable[[Any], Any]] = {
        "input_schema": lambda g: g.get_input_jsonschema(),
        "output_schema": lambda g: g.get_output_jsonschema(),
        "state_schema": _state_schema,
        "config_schema": _config_schema,
        "context_schema": lambda g: g.get_context_jsonschema(),
    }
    result: dict[str, Any] = {}
    for key, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result[key] = make(graph)
        except Exception as exc:  # a user's types pydantic cannot describe
            reason = (str(exc).splitlines() or [""])[0]
            log.warning("no %s for graph %s: %s: %s", key, _name(graph), type(exc).__name__, reason)
            result[key] = None
    return result


async def subgraph_schemas(
    graph: Pregel, namespace: str | None, recurse: bool
) -> dict[str, dict[str, Any]]:
    """Namespace (``parent|child``) -> the schemas of that subgraph."""
    return {
        ns: schemas(sub)
        async for ns, sub in graph.aget_subgraphs(namespace=namespace, recurse=recurse)
    }


def _state_schema(graph: Any) -> dict[str, Any]:
    """One property per channel the graph streams, typed by what the channel accepts (``Any``
    where pydantic cannot describe that type)."""
    fields: dict[str, Any] = {}
    for key in graph.stream_channels_list:
        kind = getattr(graph.channels[key], "UpdateType", Any)
        try:
            TypeAdapter(kind).json_schema()
        except Exception:
            kind = Any
        fields[key] = (kind, None)
    return create_model(graph.get_name("State"), **fields).model_json_schema()


def _config_schema(graph: Any) -> dict[str, Any]:
    """The schema of ``config.configurable``: since LangGraph 0.6 that is the context schema;
    ``{}`` for a graph without one."""
    context_schema = graph.context_schema
    if context_schema is None:
        return {}
    schema = TypeAdapter(context_schema).json_schema()
    for key in _INTERNAL_CONFIG_KEYS:
        schema.get("properties", {}).pop(key, None)
    if getattr(context_schema, "__name__", None):
        schema["title"] = context_schema.__name__
    return schema


def _name(graph: Any) -> str:
    return str(getattr(graph, "name", None) or type(graph).__name__)
