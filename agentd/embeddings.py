"""The store's semantic-search index from ``store.index``: the embedding function named by
``embed`` (a file or module function, or a LangChain ``provider:model`` string) turned into the
index config LangGraph's store takes."""

from __future__ import annotations

import importlib
import importlib.util
import sqlite3
import sys
from pathlib import Path
from typing import Any

from langgraph.store.base.embed import ensure_embeddings

from agentd.config import ConfigError, StoreIndexConfig


def index_config(spec: StoreIndexConfig | None, base_dir: Path) -> dict[str, Any] | None:
    """LangGraph's ``IndexConfig`` for ``spec``; a problem is a one-line ConfigError."""
    if spec is None:
        return None
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        raise ConfigError(
            "store.index needs SQLite extension loading (for sqlite-vec), which this Python's "
            "sqlite3 module was built without; use a Python built with "
            "--enable-loadable-sqlite-extensions (distribution Pythons are)"
        )
    config: dict[str, Any] = {
        "dims": spec.dims,
        "embed": _embed(spec.embed, base_dir),
        "fields": list(spec.fields),
        # LangGraph's SQLite store reads the fields to embed from "text_fields", not "fields".
        "text_fields": list(spec.fields),
    }
    if spec.distance_type:
        config["distance_type"] = spec.distance_type
    try:
        config["embed"] = ensure_embeddings(config["embed"])
    except Exception as exc:
        raise ConfigError(f"store.index.embed {spec.embed!r}: {exc}") from exc
    return config


def _embed(target: str, base_dir: Path) -> Any:
    location, _, attr = target.rpartition(":")
    if location.endswith(".py") or "/" in location:
        path = (base_dir / location).resolve()
        if not path.is_file():
            raise ConfigError(f"store.index.embed: file not found: {path}")
        name = f"agentd_embed.{path.stem}"
        module = sys.modules.get(name)
        if module is None or getattr(module, "__file__", None) != str(path):
            mod_spec = importlib.util.spec_from_file_location(name, path)
            if mod_spec is None or mod_spec.loader is None:
                raise ConfigError(f"store.index.embed: cannot import {path}")
            module = importlib.util.module_from_spec(mod_spec)
            try:
                mod_spec.loader.exec_module(module)
            except Exception as exc:
                raise ConfigError(
                    f"store.index.embed: importing {path} failed: {type(exc).__name__}: {exc}"
                ) from exc
            sys.modules[name] = module
    else:
        # "module:function", or else a LangChain "provider:model" string that LangGraph resolves.
        try:
            module = importlib.import_module(location) if attr.isidentifier() else None
        except ImportError:
            module = None
        if module is None or not hasattr(module, attr):
            return target
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"store.index.embed: '{location}' has no attribute '{attr}'")
    if not callable(fn) and not hasattr(fn, "embed_documents"):
        raise ConfigError(f"store.index.embed: '{target}' is not a function or Embeddings")
    return fn
