"""JSON on the wire: orjson, with LangChain messages and pydantic models dumped like the
official server does (``model_dump()``), exceptions as ``{"error", "message"}``."""

import base64
import dataclasses
import decimal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(obj: Any) -> Any:
    dump: Callable[[], Any] | None = getattr(obj, "model_dump", None)
    if dump is not None and callable(dump):
        return dump()
    if isinstance(obj, BaseException):
        return error_payload(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        return base64.b64encode(obj).decode()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    legacy = getattr(obj, "dict", None)  # pydantic v1 models
    if legacy is not None and callable(legacy):
        return legacy()
    if hasattr(obj, "_asdict"):
        return obj._asdict()
    return repr(obj)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=_OPTS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def error_payload(exc: BaseException) -> dict[str, str]:
    return {"error": type(exc).__name__, "message": str(exc)}


def now() -> datetime:
    return datetime.now(UTC)
