"""The ML-Logger compat logger's row queue as a plain object (no Ray): order per file,
batching, a failing append kept and retried, flush raising while it fails."""

from __future__ import annotations

import threading

import pytest

from rayplex.compat._rows import RowWriter


class _Target:
    """Stands in for a rayplex Logger: records appends; fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.appends: list[tuple[str, list[bytes], bool]] = []
        self.failing = threading.Event()

    def _append_rows(self, path: str, rows: list[bytes], framed: bool) -> str:
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
