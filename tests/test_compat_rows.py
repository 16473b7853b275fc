"""The ML-Logger compat logger's row queue as a plain object (no Ray): order per file,
batching, a failing append kept and retried, flush raising while it fails."""

from __future__ import annotations

import threading

import pytest

from rayplex.compat._rows import RowWriter


class _Target:
    """Stands in for a Logger's ArtifactClient: records appends; fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.appends: list[tuple[str, list[bytes], bool]] = []
        self.failing = threading.Event()

    def append_rows(self, path: str, rows: list[bytes], framed: bool) -> str:
        if self.failing.is_set():
            raise OSError(28, "No space left on device")
        self.appends.append((path, list(rows), framed))
        return path


def _rows_of(target: _Target, path: str) -> list[bytes]:
    return [row for p, rows, _ in target.appends if p == path for row in rows]


def test_rows_reach_each_file_in_order_batched_per_file() -> None:
    target, writer = _Target(), RowWriter()
    for i in range(500):
        writer.put(target, "metrics.pkl", b"m%d" % i, framed=True)
        if i % 7 == 0:
            writer.put(target, "rows.jsonl", b"j%d\n" % i, framed=False)
    writer.flush(timeout=30)
    assert _rows_of(target, "metrics.pkl") == [b"m%d" % i for i in range(500)]
    assert _rows_of(target, "rows.jsonl") == [b"j%d\n" % i for i in range(0, 500, 7)]
    assert all(framed == path.endswith(".pkl") for path, _, framed in target.appends)
    assert len(target.appends) < 500 + 72  # batched: far fewer requests than rows


def test_a_failing_append_is_kept_and_retried_and_flush_raises_while_it_fails() -> None:
    target, writer = _Target(), RowWriter()
    target.failing.set()
    for i in range(20):
        writer.put(target, "metrics.pkl", b"%d" % i, framed=True)
    with pytest.raises(OSError, match="No space"):
        writer.flush(timeout=30)
    target.failing.clear()  # the disk has room again
    writer.flush(timeout=30)
    assert _rows_of(target, "metrics.pkl") == [b"%d" % i for i in range(20)]


def test_the_queue_is_bounded_in_bytes_under_the_configured_buffer_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """RAYPLEX_MAX_BUFFER_MB bounds the row queue too: with the hub stuck, put() waits once a
    quarter of it is queued, and nothing queued is lost when the hub answers again."""
    import time

    from rayplex.compat._rows import max_queued_bytes
    from rayplex.config import config, reload_config

    monkeypatch.setenv("RAYPLEX_MAX_BUFFER_MB", "1")
    reload_config()
    try:
        bound = max_queued_bytes()
        assert bound == config().max_buffer_bytes // 4 == 2**18
        gate = threading.Event()

        class Stuck(_Target):
            def append_rows(self, path: str, rows: list[bytes], framed: bool) -> str:
                gate.wait(60)
                return super().append_rows(path, rows, framed)

        target, writer = Stuck(), RowWriter()
        rows = [b"%04d" % i + b"x" * 10_236 for i in range(100)]  # 1 MB in all, 10 KB each
        done = threading.Event()

        def produce() -> None:
            for row in rows:
                writer.put(target, "metrics.pkl", row, framed=True)
            done.set()

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        most = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not done.is_set():
            most = max(most, writer.queued_bytes)
            if most + 10_240 > bound:  # full: the producer must be waiting now
                break
            done.wait(0.01)
        assert not done.is_set(), "put() never waited: the queue is not bounded"
        assert writer.queued_bytes <= bound
        gate.set()
        producer.join(60)
        writer.flush(timeout=60)
        assert _rows_of(target, "metrics.pkl") == rows
    finally:
        monkeypatch.delenv("RAYPLEX_MAX_BUFFER_MB")
        reload_config()
