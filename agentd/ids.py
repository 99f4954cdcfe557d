"""Identifiers: uuid7 for threads and runs, uuid5 for default assistants."""

import functools
import os
import re
import time
import uuid

# The namespace the Agent Server derives default assistant ids from (not an RFC namespace).
ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")

_last_ms = 0
_seq = 0


def uuid7() -> uuid.UUID:
    """A time-ordered UUIDv7 (RFC 9562), monotonic within this process."""
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        # Same millisecond (or a clock step back): bump a 12-bit counter so ids keep increasing.
        _seq += 1
        if _seq > 0xFFF:
            _last_ms += 1
            _seq = 0
        ms = _last_ms
    else:
        _last_ms, _seq = ms, int.from_bytes(os.urandom(2), "big") & 0x3FF
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (_seq << 64) | (0b10 << 62) | rand
    return uuid.UUID(int=value)


_CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@functools.lru_cache(maxsize=1024)
def default_assistant_id(graph_id: str) -> str:
    return str(uuid.uuid5(ASSISTANT_NAMESPACE, graph_id))


def parse_uuid(value: str) -> str | None:
    """The canonical form of a UUID string, or None when it is not one."""
    if isinstance(value, str) and _CANONICAL.match(value):
        return value  # already canonical: the common case, without building a UUID
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None
