"""Graphs: load the ones ``langgraph.json`` names, describe their default assistants, and hand
the executor a graph bound to the backend's checkpointer and store."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph_sdk.runtime import AccessContext, _ExecutionRuntime, _ReadRuntime

from agentd.config import ConfigError, GraphSpec
from agentd.ids import default_assistant_id


@dataclass
class LoadedGraph:
    spec: GraphSpec
    obj: Pregel | Callable[..., Any]  # a compiled graph, or a factory taking a config

    @property
    def is_factory(self) -> bool:
        return not isinstance(self.obj, Pregel)

    @property
    def name(self) -> str:
        if isinstance(self.obj, Pregel) and self.obj.name and self.obj.name != "LangGraph":
            return self.obj.name
        return self.spec.graph_id


class GraphRegistry:
    def __init__(self, specs: tuple[GraphSpec, ...], base_dir: Path, deps: tuple[Path, ...]):
        self._specs = specs
        self._base_dir = base_dir
        self._deps = deps
        self._graphs: dict[str, LoadedGraph] = {}
        # Compiled graphs bound to a checkpointer and store, keyed by (graph_id, stateful).
        self._bound: dict[tuple[str, bool], Pregel] = {}

    def load(self) -> None:
        for dep in reversed(self._deps):
            if str(dep) not in sys.path:
                sys.path.insert(0, str(dep))
        if str(self._base_dir) not in sys.path:
            sys.path.append(str(self._base_dir))
        for spec in self._specs:
            self._graphs[spec.graph_id] = LoadedGraph(spec, _load_target(spec, self._base_dir))

    @property
    def graph_ids(self) -> list[str]:
        return list(self._graphs)

    def __contains__(self, graph_id: object) -> bool:
        return graph_id in self._graphs

    def resolve_assistant_id(self, value: str) -> str:
        """A graph name names that graph's default assistant."""
        return default_assistant_id(value) if value in self._graphs else value

    def default_assistants(self) -> list[dict[str, Any]]:
        return [
            {
                "assistant_id": default_assistant_id(g.spec.graph_id),
                "graph_id": g.spec.graph_id,
                "name": g.name,
                "description": g.spec.description,
            }
            for g in self._graphs.values()
        ]

    @asynccontextmanager
    async def bound(
        self,
        graph_id: str,
        config: dict[str, Any],
        checkpointer: Any,
        store: Any,
        *,
        access: AccessContext = "threads.read",
        context: Any = None,
        shared: bool = True,
    ) -> AsyncIterator[Pregel]:
        """The graph, ready to run with ``config``; factories are called per use, with the
        config and/or a ``ServerRuntime`` saying why (``access``). ``shared``: the
        checkpointer serves every caller (the binding is kept); a run's own (fenced) one is
        bound for this use only."""
        loaded = self._graphs[graph_id]
        if not loaded.is_factory and not shared:
            yield _bind(loaded.obj, checkpointer, store)  # type: ignore[arg-type]
            return
        if not loaded.is_factory:
            key = (graph_id, checkpointer is not None)
            graph = self._bound.get(key)
            if graph is None:
                graph = _bind(loaded.obj, checkpointer, store)  # type: ignore[arg-type]
                self._bound[key] = graph
            yield graph
            return
        runtime = _runtime(access, store, context)
        async with _call_factory(loaded.obj, config, runtime) as made:
            if isinstance(made, StateGraph):
                made = made.compile()
            if not isinstance(made, Pregel):
                raise TypeError(
                    f"graph factory for '{graph_id}' returned {type(made).__name__}, "
                    "expected a compiled graph"
                )
            yield _bind(made, checkpointer, store)


def _bind(graph: Pregel, checkpointer: Any, store: Any) -> Pregel:
    return graph.copy(update={"checkpointer": checkpointer, "store": store})


def _runtime(access: AccessContext, store: Any, context: Any) -> Any:
    if access == "threads.create_run":
        return _ExecutionRuntime(access_context=access, store=store, context=context)
    return _ReadRuntime(access_context=access, store=store)


def _factory_args(
    factory: Callable[..., Any], config: dict[str, Any], runtime: Any
) -> tuple[list[Any], dict[str, Any]]:
    """Arguments by name or annotation: ``runtime``/``ServerRuntime`` gets the runtime, any
    other parameter (``config``) the run's config."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        wants_runtime = p.name == "runtime" or "Runtime" in str(p.annotation)
        value = runtime if wants_runtime else config
        if p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = value
        else:
            args.append(value)
    return args, kwargs


@asynccontextmanager
async def _call_factory(
    factory: Callable[..., Any], config: dict[str, Any], runtime: Any
) -> AsyncIterator[Any]:
    args, kwargs = _factory_args(factory, config, runtime)
    result = factory(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, AbstractAsyncContextManager):
        async with result as graph:
            yield graph
    elif isinstance(result, AbstractContextManager):
        with result as graph:
            yield graph
    else:
        yield result


def _load_target(spec: GraphSpec, base_dir: Path) -> Pregel | Callable[..., Any]:
    location, _, attr = spec.target.rpartition(":")
    if location.endswith(".py") or "/" in location:
        path = (base_dir / location).resolve()
        if not path.is_file():
            raise ConfigError(f"graph '{spec.graph_id}': file not found: {path}")
        module_name = f"agentd_graphs.{spec.graph_id}"
        mod_spec = importlib.util.spec_from_file_location(module_name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ConfigError(f"graph '{spec.graph_id}': cannot import {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[module_name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(
                f"graph '{spec.graph_id}': importing {path} failed: {type(exc).__name__}: {exc}"
            ) from exc
    else:
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"graph '{spec.graph_id}': module not found: {location}") from exc
        except Exception as exc:
            raise ConfigError(
                f"graph '{spec.graph_id}': importing {location} failed: {type(exc).__name__}: {exc}"
            ) from exc
    if not hasattr(module, attr):
        raise ConfigError(f"graph '{spec.graph_id}': '{location}' has no attribute '{attr}'")
    obj = getattr(module, attr)
    if isinstance(obj, StateGraph):
        obj = obj.compile()
    if not isinstance(obj, Pregel) and not callable(obj):
        raise ConfigError(
            f"graph '{spec.graph_id}': '{spec.target}' is a {type(obj).__name__}, "
            "not a graph or a graph factory"
        )
    return obj
