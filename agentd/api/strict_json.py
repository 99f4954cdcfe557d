"""Request bodies parsed as strict JSON: what is accepted can be stored and sent back unchanged.

Refused, as invalid JSON: NaN and Infinity, numbers out of range (``1e400``), integers past 64
bits, strings holding a lone UTF-16 surrogate, and arrays and objects nested more than
MAX_JSON_DEPTH levels. Nothing here recurses in Python, whatever the nesting of the body."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

# What is accepted must be written back out: orjson (the wire, the stored rows) serializes at
# most 254 levels and ormsgpack (LangGraph's checkpoints) 255, and agentd and LangGraph wrap a
# value in a few more (a list of runs holding kwargs holding config...), as a graph may in its
# state. 128 leaves room for both; real payloads (messages, tool schemas) stay under 30.
MAX_JSON_DEPTH = 128
_INT64 = range(-(2**63), 2**63)
# Integers of fewer digits fit in 64 bits. orjson takes unsigned ones up to 2**64 and reads
# longer ones as floats, without a word: a run of this many digits (in a string too) sends the
# body through Python's parser as well, which refuses what does not fit.
_LONG_INTEGER = b"0" * 19
_DIGITS = bytes.maketrans(b"0123456789", b"0" * 10)


class BodyRangeError(json.JSONDecodeError):
    """A body refused for a reason worth naming in the answer (``exc.msg``)."""


def _orjson_depth_limit() -> int:
    """The deepest nesting orjson parses (it refuses deeper documents, in Rust)."""

    def parses(depth: int) -> bool:
        try:
            orjson.loads(b"[" * depth + b"]" * depth)
        except orjson.JSONDecodeError:
            return False
        return True

    low, high = MAX_JSON_DEPTH, 1 << 16
    if not parses(low) or parses(high):
        raise RuntimeError("orjson's nesting limit changed: agentd's depth check relies on it")
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if parses(middle) else (low, middle)
    return low


# Wrapped in this many arrays, a body nested deeper than MAX_JSON_DEPTH is past orjson's own
# limit: orjson checks the depth while it parses, with no pass of ours over the body.
_PADDING = _orjson_depth_limit() - MAX_JSON_DEPTH
_OPEN, _CLOSE = b"[" * _PADDING, b"]" * _PADDING
_TOO_DEEP = f"arrays and objects nested more than {MAX_JSON_DEPTH} levels deep"


def loads(body: bytes) -> Any:
    encoding = json.detect_encoding(body)
    if encoding != "utf-8":  # UTF-16/32, or a byte order mark
        body = body.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    # A body with fewer brackets than the limit cannot be nested deeper: most bodies.
    deep = body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH
    try:
        value = _unwrap(orjson.loads(_OPEN + body + _CLOSE)) if deep else orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _refusal(body, exc, deep) from None
    if _LONG_INTEGER in body.translate(_DIGITS):
        _python_loads(body)  # refuses the integers past 64 bits orjson made floats of
    return value


def _unwrap(value: Any) -> Any:
    for _ in range(_PADDING):
        # One element per level, or the body was not one JSON value (e.g. ``1],[2``).
        if type(value) is not list or len(value) != 1:
            raise orjson.JSONDecodeError("not a single JSON value", "", 0)
        value = value[0]
    return value


def _refusal(body: bytes, exc: orjson.JSONDecodeError, deep: bool) -> json.JSONDecodeError:
    """The reason to give for a refused body."""
    if exc.msg.startswith("depth limit"):  # orjson's words: over its limit, padding included
        return BodyRangeError(_TOO_DEEP, "", 0)
    if deep:
        try:  # the padding may have made a wrong body parse (``1],[2``): find the body's fault
            orjson.loads(body)
        except orjson.JSONDecodeError as own:
            exc = own
    # Python's parser names NaN, Infinity and out-of-range numbers. orjson read the body up to
    # its fault without passing its limit, so Python's parser (which recurses) does not go
    # deeper than that; a RecursionError all the same means far too deep.
    try:
        _python_loads(body)
    except json.JSONDecodeError as named:
        return named
    except RecursionError:
        return BodyRangeError(_TOO_DEEP, "", 0)
    except UnicodeDecodeError:
        return BodyRangeError("the body is not UTF-8 text", "", 0)
    return BodyRangeError(exc.msg, "", 0)  # e.g. a lone surrogate, which Python lets through


def _python_loads(body: bytes) -> Any:
    return json.loads(body, parse_int=_int64, parse_float=_finite, parse_constant=_no_constant)


def _int64(text: str) -> int:
    value = int(text)
    if value not in _INT64:
        raise BodyRangeError(f"integer {text} does not fit in 64 bits", text, 0)
    return value


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise BodyRangeError(f"number {text} is out of range", text, 0)
    return value


def _no_constant(text: str) -> float:
    raise BodyRangeError(f"{text} is not a JSON number", text, 0)
