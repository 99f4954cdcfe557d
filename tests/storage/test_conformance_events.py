"""Conformance: the event log of resumable runs (the EventLog of agentd.broker.base): append
in id order, pages by id, count and byte limits, caps that trim the oldest, the thread view,
ends, expiry and the sweep, and the newest id."""

from __future__ import annotations

import time
from collections.abc import Iterator

from agentd.storage.base import LoggedEvent, Storage, StoredEvent
from tests.storage.helpers import new_id, queue

BIG = 1 << 30
_clock = iter(range(1_700_000_000_000, 1 << 62, 7))


def _events(run_id: str, thread_id: str, sizes: list[int]) -> list[LoggedEvent]:
    """Events with increasing ids, several per millisecond; data of the given sizes."""
    out = []
    for i, size in enumerate(sizes):
        ms = next(_clock) if i % 3 == 0 else out[-1][2]
        seq = 0 if i % 3 == 0 else out[-1][3] + 1
        data = (f"{run_id[-4:]}:{i}:".encode() + b"x" * size)[: max(size, 1)]
        out.append((run_id, thread_id, ms, seq, "values" if i % 2 else "updates", data))
    return out


def _stored(events: list[LoggedEvent]) -> list[StoredEvent]:
    return [(e[2], e[3], e[4], e[5]) for e in events]


def _plain(page: list[StoredEvent]) -> list[StoredEvent]:
    return [(ms, seq, name, bytes(data)) for ms, seq, name, data in page]


async def _read(
    storage: Storage,
    run_id: str,
    after: tuple[int, int] = (0, 0),
    limit: int = 10_000,
    max_bytes: int = BIG,
) -> tuple[list[StoredEvent], bool | None]:
    page, ended = await storage.read_events(run_id, after, limit=limit, max_bytes=max_bytes)
    return _plain(page), ended


def _prefix_by_bytes(events: list[StoredEvent], max_bytes: int) -> list[StoredEvent]:
    """The events a page of ``max_bytes`` holds: up to the first that reaches it (at least one)."""
    page, size = [], 0
    for event in events:
        page.append(event)
        size += len(event[3])
        if size >= max_bytes:
            break
    return page


def _chunks(events: list[LoggedEvent], size: int) -> Iterator[list[LoggedEvent]]:
    for i in range(0, len(events), size):
        yield events[i : i + size]


async def test_a_runs_events_are_read_in_id_order_by_page(storage: Storage) -> None:
    run_id, tid = new_id(), new_id()
    assert await _read(storage, run_id) == ([], None)  # no log
    events = _events(run_id, tid, [10] * 12)
    for chunk in _chunks(events, 5):
        await storage.append_events(chunk, [], max_events=1000, max_bytes=BIG)
    stored = _stored(events)
    assert await _read(storage, run_id) == (stored, False)  # open
    after = stored[4][:2]
    assert await _read(storage, run_id, after) == (stored[5:], False)
    assert await _read(storage, run_id, stored[-1][:2]) == ([], False)
    assert await _read(storage, run_id, limit=3) == (stored[:3], False)
    assert await _read(storage, run_id, after, limit=2) == (stored[5:7], False)
    for max_bytes in (1, 10, 11, 25, 30, 1000):
        page, _ = await _read(storage, run_id, max_bytes=max_bytes)
        assert page == _prefix_by_bytes(stored, max_bytes), max_bytes
    # An id between two events (same ms, a seq not used) reads from the next one.
    ms, seq = stored[6][:2]
    assert (await _read(storage, run_id, (ms, seq - 1)))[0] == stored[6:]


async def test_appending_the_same_batch_twice_keeps_one_copy(storage: Storage) -> None:
    run_id, tid = new_id(), new_id()
    events = _events(run_id, tid, [5] * 6)
    await storage.append_events(events, [], max_events=1000, max_bytes=BIG)
    await storage.append_events(events, [], max_events=1000, max_bytes=BIG)  # a retried write
    assert await _read(storage, run_id) == (_stored(events), False)


async def test_an_end_closes_the_log_until_it_expires(storage: Storage) -> None:
    ending, expired, tid = new_id(), new_id(), new_id()
    a = _events(ending, tid, [3] * 3)
    b = _events(expired, tid, [3] * 3)
    await storage.append_events(a + b, [], max_events=1000, max_bytes=BIG)
    await storage.append_events(
        [], [(ending, time.time() + 60), (expired, time.time() - 1)], max_events=1000, max_bytes=BIG
    )
    assert await _read(storage, ending) == (_stored(a), True)
    assert await _read(storage, expired) == ([], None)
    thread = await storage.read_thread_events(tid, (0, 0), limit=100, max_bytes=BIG)
    assert _plain(thread) == _stored(a)  # expired logs are not read


async def test_caps_trim_the_oldest_events(storage: Storage) -> None:
    run_id, tid = new_id(), new_id()
    events = _events(run_id, tid, [10] * 100)
    stored = _stored(events)
    cap = 40
    for chunk in _chunks(events, 7):
        await storage.append_events(chunk, [], max_events=cap, max_bytes=BIG)
        kept, _ = await _read(storage, run_id)
        last = stored.index(kept[-1])
        # The newest are kept, in order and without a gap; a little under the cap may be.
        assert kept == stored[last + 1 - len(kept) : last + 1]
        assert kept[-1] == _stored(chunk)[-1]
        written = last + 1
        assert min(written, cap - cap // 8) <= len(kept) <= cap
    # By bytes: each event is 10 bytes, 150 bytes hold 15.
    sized = new_id()
    events = _events(sized, tid, [10] * 60)
    written = 0
    for chunk in _chunks(events, 9):
        await storage.append_events(chunk, [], max_events=1000, max_bytes=150)
        written += 10 * len(chunk)
        kept, _ = await _read(storage, sized)
        assert kept == _stored(events)[written // 10 - len(kept) : written // 10]
        kept_bytes = sum(len(e[3]) for e in kept)
        assert min(written, 150 - 150 // 8 - 10) <= kept_bytes <= 150
    # An event larger than the cap alone is still kept: the newest always is.
    huge = new_id()
    await storage.append_events(_events(huge, tid, [10, 5000]), [], max_events=10, max_bytes=100)
    kept, _ = await _read(storage, huge)
    assert len(kept) == 1 and len(kept[0][3]) == 5000


async def test_a_threads_events_interleave_its_runs_in_id_order(storage: Storage) -> None:
    tid, other = new_id(), new_id()
    one, two, elsewhere = new_id(), new_id(), new_id()
    a = _events(one, tid, [4] * 5)
    b = _events(two, tid, [4] * 5)
    c = _events(elsewhere, other, [4] * 5)
    # Appended in id order across runs, as the journal does.
    merged = sorted(a + b + c, key=lambda e: (e[2], e[3]))
    await storage.append_events(merged[:8], [], max_events=1000, max_bytes=BIG)
    await storage.append_events(merged[8:], [], max_events=1000, max_bytes=BIG)
    ours = _stored(sorted(a + b, key=lambda e: (e[2], e[3])))
    assert _plain(await storage.read_thread_events(tid, (0, 0), limit=100, max_bytes=BIG)) == ours
    after = ours[3][:2]
    page = await storage.read_thread_events(tid, after, limit=4, max_bytes=BIG)
    assert _plain(page) == ours[4:8]
    page = await storage.read_thread_events(tid, (0, 0), limit=100, max_bytes=9)
    assert _plain(page) == _prefix_by_bytes(ours, 9)
    assert await storage.read_thread_events(new_id(), (0, 0), limit=100, max_bytes=BIG) == []


async def test_the_sweep_deletes_expired_logs_and_ends_orphans(storage: Storage) -> None:
    tid = new_id()
    inflight, _ = await queue(storage, tid)
    live = inflight["run_id"]
    expired, ending, orphan = new_id(), new_id(), new_id()
    events = {rid: _events(rid, tid, [3] * 2) for rid in (live, expired, ending, orphan)}
    await storage.append_events(
        [e for rid in events for e in events[rid]], [], max_events=100, max_bytes=BIG
    )
    await storage.append_events(
        [], [(expired, time.time() - 1), (ending, time.time() + 60)], max_events=100, max_bytes=BIG
    )
    # The orphan's run is not in flight: its process died before its end was recorded.
    assert await storage.sweep_event_logs(60) == 1
    assert await _read(storage, expired) == ([], None)
    assert await _read(storage, ending) == (_stored(events[ending]), True)
    assert await _read(storage, orphan) == (_stored(events[orphan]), True)  # ended by the sweep
    assert await _read(storage, live) == (_stored(events[live]), False)  # its run is pending
    assert await storage.sweep_event_logs(60) == 0
    # With no time to live, an orphan goes at once; logs that expire later stay.
    gone = new_id()
    await storage.append_events(_events(gone, tid, [3]), [], max_events=100, max_bytes=BIG)
    assert await storage.sweep_event_logs(0) == 1
    assert await _read(storage, gone) == ([], None)
    assert await _read(storage, live) == (_stored(events[live]), False)


async def test_the_newest_event_key_continues_the_ids(storage: Storage) -> None:
    assert await storage.last_event_key() is None
    tid = new_id()
    first, second = new_id(), new_id()
    a = _events(first, tid, [3] * 4)
    b = _events(second, tid, [3] * 4)
    await storage.append_events(a, [], max_events=100, max_bytes=BIG)
    assert await storage.last_event_key() == a[-1][2:4]
    await storage.append_events(b, [], max_events=100, max_bytes=BIG)
    assert await storage.last_event_key() == b[-1][2:4]
