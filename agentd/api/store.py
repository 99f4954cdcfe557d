"""The store (long-term memory): items in namespaces, search (filter, semantic query) and
namespace listing, served by LangGraph's own store, the one graphs see as ``runtime.store``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, get_args

from fastapi import Query, Request
from fastapi.responses import Response
from langgraph.store.base import (
    NOT_PROVIDED,
    BaseStore,
    InvalidNamespaceError,
    Item,
    SearchItem,
)

from agentd.api.common import JSON, make_router, services
from agentd.schemas import (
    StoreDelete,
    StoreFilterOperator,
    StoreListNamespaces,
    StorePut,
    StoreSearch,
    Unprocessable,
)

router = make_router("Store")
_OPERATORS = set(get_args(StoreFilterOperator))


def _store(request: Request) -> BaseStore:
    store = services(request).storage.store
    assert store is not None  # opened with the storage
    return store


# LangGraph's SQLite store lists namespaces to a depth by cutting every stored namespace label
# by label in SQL, copying what is left each time: a namespace of thousands of labels, or of
# huge ones, makes every such listing slow. Real namespaces are a few short ids.
MAX_NAMESPACE_LABELS = 64
MAX_LABEL_LENGTH = 1024


def _namespace(labels: list[str] | None, *, wildcard: bool = False) -> tuple[str, ...]:
    """Labels are non-empty and dot-free: the wire joins them with dots (GET /store/items).
    No NUL either: LangGraph's stores refuse it (and PostgreSQL text cannot hold it)."""
    if labels and len(labels) > MAX_NAMESPACE_LABELS:
        raise Unprocessable(
            f"Namespace has {len(labels)} labels; at most {MAX_NAMESPACE_LABELS} are allowed"
        )
    for label in labels or ():
        if len(label) > MAX_LABEL_LENGTH:
            raise Unprocessable(
                f"Namespace label {label[:20]!r}... is {len(label)} characters long; "
                f"at most {MAX_LABEL_LENGTH} are allowed"
            )
        if not label or "." in label or "\0" in label or (label == "*" and not wildcard):
            raise Unprocessable(
                f"Namespace label {label!r} must be a non-empty string without periods "
                "or NUL characters"
            )
    return tuple(labels or ())


def _key(key: str) -> str:
    # Refused everywhere, as in labels: a key PostgreSQL's store could not hold (text has no
    # NUL there) must not be one the embedded store keeps.
    if "\0" in key:
        raise Unprocessable(f"Key {key!r} must not contain NUL characters")
    return key


def _time(value: datetime) -> str:
    # LangGraph's SQLite store keeps naive UTC timestamps.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _item(item: Item) -> dict[str, Any]:
    out = {
        "namespace": list(item.namespace),
        "key": item.key,
        "value": item.value,
        "created_at": _time(item.created_at),
        "updated_at": _time(item.updated_at),
    }
    if isinstance(item, SearchItem):
        out["score"] = item.score
    return out


@router.put("/store/items", status_code=204)
async def put_item(body: StorePut, request: Request) -> Response:
    namespace = _namespace(body.namespace)
    if not namespace:
        raise Unprocessable("Namespace must have at least one label")
    # No ``ttl`` in the body: the store's default_ttl; an explicit null: no expiry.
    ttl: Any = body.ttl if "ttl" in body.model_fields_set else NOT_PROVIDED
    try:
        await _store(request).aput(namespace, _key(body.key), body.value, index=body.index, ttl=ttl)
    except InvalidNamespaceError as exc:
        raise Unprocessable(str(exc)) from exc
    return Response(status_code=204)


@router.get("/store/items", response_class=JSON)
async def get_item(
    request: Request,
    namespace: Annotated[list[str] | None, Query()] = None,
    key: str | None = None,
    refresh_ttl: bool | None = None,
) -> Response:
    if not key:
        raise Unprocessable("Key is required")
    # The SDK sends one dot-joined string; repeated parameters are one label each.
    labels = namespace or []
    if len(labels) == 1:
        labels = labels[0].split(".") if labels[0] else []
    item = await _store(request).aget(_namespace(labels), _key(key), refresh_ttl=refresh_ttl)
    return JSON(_item(item) if item else None)


@router.delete("/store/items", status_code=204)
async def delete_item(body: StoreDelete, request: Request) -> Response:
    await _store(request).adelete(_namespace(body.namespace), _key(body.key))
    return Response(status_code=204)


@router.post("/store/items/search", response_class=JSON)
async def search_items(body: StoreSearch, request: Request) -> Response:
    for field, condition in (body.filter or {}).items():
        if isinstance(condition, dict):
            unknown = sorted(set(condition) - _OPERATORS)
            if unknown:
                raise Unprocessable(
                    f"Unsupported filter operator(s) {unknown} for {field!r}: "
                    f"use {', '.join(sorted(_OPERATORS))}"
                )
    try:
        items = await _store(request).asearch(
            _namespace(body.namespace_prefix),
            query=body.query,
            filter=body.filter,
            limit=body.limit,
            offset=body.offset,
            refresh_ttl=body.refresh_ttl,
        )
    except ValueError as exc:  # a filter key the store refuses
        raise Unprocessable(str(exc)) from exc
    return JSON({"items": [_item(i) for i in items]})


@router.post("/store/namespaces", response_class=JSON)
async def list_namespaces(body: StoreListNamespaces, request: Request) -> Response:
    namespaces = await _store(request).alist_namespaces(
        prefix=_namespace(body.prefix, wildcard=True) or None,
        suffix=_namespace(body.suffix, wildcard=True) or None,
        # No namespace is deeper than the cap: a larger depth means "all" (and stays in range
        # of the database's integer).
        max_depth=None if body.max_depth is None else min(body.max_depth, MAX_NAMESPACE_LABELS),
        limit=body.limit,
        offset=body.offset,
    )
    return JSON({"namespaces": [list(ns) for ns in namespaces]})
