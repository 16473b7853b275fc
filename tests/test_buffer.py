"""rayplex.buffer.Buffer as a plain object: the byte bound, the overflow policies, spill files
that vanish or cannot be written, flush markers, and the room that in-flight bytes take."""

from __future__ import annotations

import errno
import glob
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayplex.buffer import Buffer

KB = 1024
ITEM = 10 * KB  # a 10 KB text line
OVERHEAD = 300


def line(i: int) -> tuple[int, str]:
    """A record holding a distinct 10 KB string, and its index."""
    return (i, f"{i:08d}" + "x" * (ITEM - 8))


def nbytes_of(item: tuple[int, str]) -> int:
    return len(item[1]) + OVERHEAD


def in_memory(buf: Buffer) -> int:
    c = buf.counters
    return c["queued_bytes"] + c["in_flight_bytes"]


def drain_all(buf: Buffer, batch: int = 7) -> list[object]:
    """Drain and release until empty: the stream of items and markers, in drain order."""
    stream: list[object] = []
    for _ in range(100_000):
        items, markers, nbytes = buf.drain(batch)
        stream.extend(items)
        stream.extend(markers)
        buf.release(nbytes)
        if not items and not markers and not len(buf):
            return stream
    raise AssertionError("drain did not finish")


def indices(stream: list[object]) -> list[int]:
    return [x[0] for x in stream if isinstance(x, tuple)]


def spill_files(root: Path) -> list[str]:
    return sorted(glob.glob(str(root / "rayplex-spill-*" / "*.spill")))


def put_variants() -> list[str]:
    return ["put", "_put_locked"]  # the lock-free fast path, and the free-threaded one


def putter(buf: Buffer, variant: str) -> Callable[[object, int], None]:
    put: Callable[[object, int], None] = getattr(buf, variant)
    return put


# ----------------------------------------------------------------------------- the bound

@pytest.mark.parametrize("variant", put_variants())
@pytest.mark.parametrize("policy", ["spill", "drop_oldest", "block"])
def test_bytes_in_memory_never_exceed_the_bound_by_more_than_one_item(
        tmp_path: Path, policy: str, variant: str) -> None:
    bound = 256 * KB
    buf = Buffer(bound, policy, str(tmp_path), 0.01, "bound")
    put = putter(buf, variant)
    for i in range(400):
        item = line(i)
        put(item, nbytes_of(item))
        assert in_memory(buf) <= bound + nbytes_of(item)
    c = buf.counters
    assert c["dropped"] + c["spilled"] > 0  # the policy did act
    delivered = indices(drain_all(buf))
    assert delivered == sorted(delivered)
    assert len(delivered) + buf.counters["dropped"] == 400
    if policy == "spill":
        assert delivered == list(range(400))
    else:  # what is left is the newest
        assert delivered == list(range(400 - len(delivered), 400))
    buf.close()


def test_in_flight_bytes_count_against_the_bound(tmp_path: Path) -> None:
    bound = 100 * KB
    buf = Buffer(bound, "drop_oldest", str(tmp_path), 0.0, "inflight")
    for i in range(6):
        buf.put(*_with_size(line(i)))
    items, _, nbytes = buf.drain(100)
    assert len(items) == 6
    assert buf.counters["in_flight_bytes"] == nbytes == 6 * (ITEM + OVERHEAD)
    for i in range(6, 12):
        buf.put(*_with_size(line(i)))
        assert in_memory(buf) <= bound + ITEM + OVERHEAD
    assert buf.counters["dropped"] > 0  # only 4 items fitted beside the 6 in flight
    buf.release(nbytes)
    assert buf.counters["in_flight_bytes"] == 0


def _with_size(item: tuple[int, str]) -> tuple[tuple[int, str], int]:
    return item, nbytes_of(item)


def test_a_single_item_larger_than_the_bound_still_goes_through(tmp_path: Path) -> None:
    buf = Buffer(10 * KB, "block", str(tmp_path), 5.0, "huge")
    big = (0, "x" * 100 * KB)
    buf.put(big, 100 * KB + OVERHEAD)  # would wait 5 s if it did not fit
    assert buf.drain(10) == ([big], [], 100 * KB + OVERHEAD)
    assert buf.counters["dropped"] == 0


def test_drop_oldest_drops_just_enough_and_warns(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    size = ITEM + OVERHEAD
    buf = Buffer(10 * size, "drop_oldest", str(tmp_path), 0.0, "drop")
    with caplog.at_level(logging.WARNING, logger="rayplex"):
        for i in range(25):
            buf.put(*_with_size(line(i)))
    assert buf.counters["dropped"] == 14  # the bound holds 10 items, and one may be over
    assert indices(drain_all(buf)) == list(range(14, 25))
    assert any("dropped" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- spill

def test_spilled_items_come_back_in_order_exactly_once(tmp_path: Path) -> None:
    buf = Buffer(64 * KB, "spill", str(tmp_path), 1.0, "spill")
    for i in range(300):
        buf.put(*_with_size(line(i)))
    c = buf.counters
    assert c["spill_files"] > 1 and c["on_disk"] == c["spilled"] > 0
    assert len(buf) == 300
    assert indices(drain_all(buf)) == list(range(300))
    c = buf.counters
    assert c["replayed"] == c["spilled"] and c["lost"] == c["dropped"] == 0
    assert c["queued"] == c["queued_bytes"] == c["in_flight_bytes"] == c["on_disk"] == 0
    assert spill_files(tmp_path) == []  # each file is removed once read back
    assert buf.take_error() is None
    buf.close()
    assert glob.glob(str(tmp_path / "rayplex-spill-*")) == []


def test_spill_files_live_in_a_private_directory(tmp_path: Path) -> None:
    buf = Buffer(64 * KB, "spill", str(tmp_path), 1.0, "a/b c")
    for i in range(20):
        buf.put(*_with_size(line(i)))
    (root,) = glob.glob(str(tmp_path / "rayplex-spill-*"))
    assert os.stat(root).st_mode & 0o777 == 0o700
    assert "/" not in os.path.basename(root)[len("rayplex-spill-"):]
    buf.close()


def test_a_spilled_chunk_is_read_back_only_once_it_fits(tmp_path: Path) -> None:
    size = ITEM + OVERHEAD
    buf = Buffer(16 * size, "spill", str(tmp_path), 1.0, "room")
    for i in range(40):
        buf.put(*_with_size(line(i)))
    assert buf.counters["on_disk"] > 0
    first, _, nbytes = buf.drain(100)  # nothing in flight: always makes progress
    assert first
    while True:  # read back while it fits, without releasing anything
        items, _, more = buf.drain(100)
        if not items:
            break
        first += items
        nbytes += more
        assert in_memory(buf) <= 16 * size
    assert len(buf) > 0  # an empty drain with items left: release first
    buf.release(nbytes)
    assert indices(first + drain_all(buf)) == list(range(40))


@pytest.mark.parametrize("where", ["missing", "under_a_file"])
def test_unusable_spill_dir_falls_back_to_block_then_drops_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str) -> None:
    if where == "missing":
        spill_dir = tmp_path / "nope"
    else:
        (tmp_path / "file").write_text("x")
        spill_dir = tmp_path / "file" / "sub"
    buf = Buffer(64 * KB, "spill", str(spill_dir), 0.05, "nospill")
    with caplog.at_level(logging.WARNING, logger="rayplex"):
        for i in range(100):
            buf.put(*_with_size(line(i)))
    c = buf.counters
    assert c["spilled"] == 0 and c["spill_failures"] >= 1 and c["dropped"] > 0
    delivered = indices(drain_all(buf))
    assert len(delivered) + buf.counters["dropped"] == 100
    assert delivered == list(range(100 - len(delivered), 100))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot spill" in m for m in messages) == 1
    assert any("dropped" in m for m in messages)


def test_a_spill_counts_only_once_fsynced(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    buf = Buffer(64 * KB, "spill", str(tmp_path), 0.0, "enospc")
    for i in range(20):
        buf.put(*_with_size(line(i)))
    c = buf.counters
    assert c["spilled"] == c["on_disk"] == 0 and c["spill_failures"] == 1
    assert spill_files(tmp_path) == []  # the partial file was removed
    delivered = indices(drain_all(buf))
    assert len(delivered) + buf.counters["dropped"] == 20
    assert delivered == list(range(20 - len(delivered), 20))


def _two_spill_files(tmp_path: Path, n: int) -> tuple[Buffer, int]:
    """A buffer with at least two spill files; returns it and the records in the first."""
    buf = Buffer(64 * KB, "spill", str(tmp_path), 1.0, "vanish")
    first = 0
    for i in range(n):
        buf.put(*_with_size(line(i)))
        if not first and buf.counters["spill_files"] == 1:
            first = buf.counters["spilled"]
    assert buf.counters["spill_files"] >= 2
    return buf, first


@pytest.mark.parametrize("damage", ["deleted", "garbled", "replaced"])
def test_a_damaged_spill_file_is_counted_lost_reported_once_and_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    buf, first = _two_spill_files(tmp_path, 100)
    path = spill_files(tmp_path)[0]
    if damage == "deleted":
        os.unlink(path)
    elif damage == "garbled":  # same inode and size, other bytes
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(b"\x00" * size)
    else:
        os.unlink(path)
        with open(path, "wb") as f:
            f.write(b"not ours")
    with caplog.at_level(logging.WARNING, logger="rayplex"):
        delivered = indices(drain_all(buf))
    assert delivered == list(range(first, 100))
    assert buf.counters["lost"] == first
    assert any("lost" in r.getMessage() for r in caplog.records)
    error = buf.take_error()
    assert isinstance(error, OSError) and f"{first} spilled records were lost" in str(error)
    assert buf.take_error() is None
    buf.close()


def test_close_counts_records_still_on_disk_as_lost(tmp_path: Path) -> None:
    buf, _ = _two_spill_files(tmp_path, 60)
    on_disk = buf.counters["on_disk"]
    buf.close()
    buf.close()
    assert buf.counters["lost"] == on_disk and buf.counters["on_disk"] == 0
    assert buf.take_error() is not None
    assert glob.glob(str(tmp_path / "rayplex-spill-*")) == []
    in_memory_left = buf.counters["queued"]
    assert in_memory_left + on_disk == 60
    assert indices(drain_all(buf)) == list(range(60 - in_memory_left, 60))  # still drainable


# ----------------------------------------------------------------------------- block

@pytest.mark.parametrize("variant", put_variants())
def test_block_waits_for_room_and_wakes_on_release(tmp_path: Path, variant: str) -> None:
    size = ITEM + OVERHEAD
    about_to_block = threading.Event()
    buf = Buffer(4 * size, "block", str(tmp_path), 60.0, "block", wake=about_to_block.set)
    put = putter(buf, variant)
    for i in range(4):
        put(*_with_size(line(i)))
    items, _, nbytes = buf.drain(100)
    assert len(items) == 4
    returned = threading.Event()

    def producer() -> None:
        for i in range(4, 6):  # the first fits over the bound, the second must wait
            put(*_with_size(line(i)))
        returned.set()

    thread = threading.Thread(target=producer)
    thread.start()
    # wake() runs under the buffer's lock just before the wait, so release() cannot run
    # before the producer waits: no race, no sleep.
    assert about_to_block.wait(10)
    assert not returned.is_set()
    buf.release(nbytes)
    assert returned.wait(10)  # far sooner than the 60 s block timeout
    thread.join()
    assert buf.counters["dropped"] == 0
    assert indices(drain_all(buf)) == [4, 5]


def test_block_times_out_once_then_drops_until_the_drainer_releases(tmp_path: Path) -> None:
    size = ITEM + OVERHEAD
    buf = Buffer(4 * size, "block", str(tmp_path), 0.05, "timeout")
    for i in range(4):
        buf.put(*_with_size(line(i)))
    items, _, nbytes = buf.drain(100)
    for i in range(4, 200):  # one 50 ms wait, then immediate drops: this takes well under 10 s
        buf.put(*_with_size(line(i)))
    assert buf.counters["dropped"] == 195  # only item 199 fits over the in-flight four
    buf.release(nbytes)
    assert indices(drain_all(buf)) == [199]


# ----------------------------------------------------------------------------- markers

def test_markers_keep_their_exact_place_across_a_spill(tmp_path: Path) -> None:
    buf = Buffer(64 * KB, "spill", str(tmp_path), 1.0, "markers")
    expected: list[object] = []
    for i in range(120):
        item = line(i)
        buf.put(item, nbytes_of(item))
        expected.append(item)
        if i % 17 == 5:
            buf.put_marker(f"m{i}")
            expected.append(f"m{i}")
    assert buf.counters["spilled"] > 0 and buf.counters["markers"] == 7
    assert drain_all(buf, batch=1000) == expected


def test_markers_are_never_dropped(tmp_path: Path) -> None:
    size = ITEM + OVERHEAD
    buf = Buffer(5 * size, "drop_oldest", str(tmp_path), 0.0, "markers")
    for i in range(30):
        buf.put(*_with_size(line(i)))
        if i % 10 == 0:
            buf.put_marker(f"m{i}")
    stream = drain_all(buf)
    assert [x for x in stream if isinstance(x, str)] == ["m0", "m10", "m20"]
    assert indices(stream) == list(range(24, 30))


def test_drain_stops_at_a_marker_and_returns_it_after_the_items_before_it(
        tmp_path: Path) -> None:
    buf = Buffer(1 << 20, "spill", str(tmp_path), 1.0, "stop")
    buf.put("a", 200)
    buf.put_marker("m1")
    buf.put_marker("m2")
    buf.put("b", 200)
    assert buf.drain(10) == (["a"], ["m1", "m2"], 200)
    assert buf.drain(10) == (["b"], [], 200)
    assert buf.drain(10) == ([], [], 0)


# ----------------------------------------------------------------------------- properties

ops = st.lists(st.one_of(st.tuples(st.just("put"), st.integers(1, 40)),
                         st.tuples(st.just("marker"), st.just(0)),
                         st.tuples(st.just("drain"), st.integers(1, 30)),
                         st.tuples(st.just("release"), st.just(0))), max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_spill_delivers_every_item_and_marker_once_in_order_whatever_the_interleaving(
        tmp_path: Path, ops: list[tuple[str, int]]) -> None:
    buf = Buffer(8 * KB, "spill", str(tmp_path), 1.0, "prop")
    expected: list[object] = []
    stream: list[object] = []
    in_flight: list[int] = []
    n = 0
    for op, arg in ops:
        if op == "put":
            for _ in range(arg):
                buf.put(("i", n), 700)
                expected.append(("i", n))
                n += 1
                # a chunk read back while nothing was in flight may add up to one chunk
                assert in_memory(buf) <= 8 * KB + 700 + max(KB, 700)
        elif op == "marker":
            buf.put_marker(("m", n))
            expected.append(("m", n))
        elif op == "drain":
            items, markers, nbytes = buf.drain(arg)
            stream += items + markers
            in_flight.append(nbytes)
        elif in_flight:
            buf.release(in_flight.pop(0))
    for nbytes in in_flight:
        buf.release(nbytes)
    stream += drain_all(buf)
    assert stream == expected
    assert buf.counters["lost"] == buf.counters["dropped"] == 0
    buf.close()


def test_concurrent_producers_keep_their_order_and_lose_nothing(tmp_path: Path) -> None:
    done = threading.Event()
    wake = threading.Event()
    buf = Buffer(32 * KB, "spill", str(tmp_path), 10.0, "threads", wake=wake.set,
                 wake_bytes=8 * KB)
    stream: list[object] = []

    def drainer() -> None:
        while True:
            finished = done.is_set()
            items, markers, nbytes = buf.drain(50)
            stream.extend(items)
            buf.release(nbytes)
            if not items and not markers:
                if finished and not len(buf):
                    return
                wake.wait(0.01)
                wake.clear()

    def producer(t: int) -> None:
        for i in range(3000):
            buf.put((t, i), 500)

    producers = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
    drain_thread = threading.Thread(target=drainer)
    drain_thread.start()
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    done.set()
    drain_thread.join(60)
    assert not drain_thread.is_alive()
    for t in range(4):
        assert [x[1] for x in stream if isinstance(x, tuple) and x[0] == t] == list(range(3000))
    c = buf.counters
    assert len(stream) == 12000 and c["dropped"] == c["lost"] == 0
    assert c["queued_bytes"] == c["in_flight_bytes"] == 0


# ----------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"max_bytes": 1.5}, {"overflow": "ring"},
                                    {"block_timeout_s": -1.0}])
def test_bad_arguments_are_refused_by_name(tmp_path: Path, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"max_bytes": KB, "overflow": "spill", "spill_dir": str(tmp_path),
                               "block_timeout_s": 1.0, "name": "bad"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Buffer(**args)  # type: ignore[arg-type]


def test_releasing_more_than_is_in_flight_is_refused(tmp_path: Path) -> None:
    buf = Buffer(KB, "spill", str(tmp_path), 1.0, "release")
    buf.put("a", 100)
    _, _, nbytes = buf.drain(10)
    with pytest.raises(ValueError, match="in flight"):
        buf.release(nbytes + 1)
    buf.release(nbytes)


# ------------------------------------------------------------ fixed-size items (put_fixed)
@pytest.mark.parametrize("policy", ["spill", "drop_oldest", "block"])
def test_fixed_size_items_mixed_with_others_keep_the_bound_order_and_counts(
        tmp_path: Path, policy: str) -> None:
    """``put_fixed`` (the scalar hot path, no wrapper) and ``put`` share one queue: the bound,
    the order, markers and the policies treat both alike."""
    bound = 64 * KB
    fixed = 300
    buf = Buffer(bound, policy, str(tmp_path), 0.01, "fixed", fixed_nbytes=fixed)
    markers = []
    for i in range(2000):
        if i % 7 == 0:
            item = line(i)
            buf.put(item, nbytes_of(item))
        else:
            buf.put_fixed((i, "reward", i, 1.0, 0.5))  # a scalar's five fields
        if i % 500 == 499:
            marker = object()
            markers.append(marker)
            buf.put_marker(marker)
        assert in_memory(buf) <= bound + max(fixed, nbytes_of(line(i)))
    stream = drain_all(buf)
    delivered = indices(stream)
    assert delivered == sorted(delivered)
    assert len(delivered) + buf.counters["dropped"] == 2000
    assert [x for x in stream if not isinstance(x, tuple)] == markers  # never dropped
    if policy == "spill":
        assert delivered == list(range(2000))
        assert buf.counters["spilled"] > 0
    buf.close()
