"""Event files: one :class:`EventWriter` per run directory, appending framed records.

File names are ``events.out.tfevents.<unix time>.<host>.<pid>.<random>`` so that a restarted
hub (or a second experiment in the same directory) starts a new file and never overwrites
one; TensorBoard reads every file of a run directory in name order.

Example:
    >>> import tempfile
    >>> from rayplex.encode import ScalarTemplate, tag_header
    >>> w = EventWriter(tempfile.mkdtemp())
    >>> w.write(ScalarTemplate(tag_header("loss")).record(0.0, 1, 0.5))
    >>> w.close()
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from rayplex.encode import file_version_record


def event_file_name(now: float | None = None) -> str:
    """A fresh, unique event file name."""
    stamp = int(time.time() if now is None else now)
    host = socket.gethostname().replace("/", "_")
    return f"events.out.tfevents.{stamp:010d}.{host}.{os.getpid()}.{secrets.token_hex(4)}"


class EventWriter:
    """Appends framed event records to a new event file in ``run_dir``."""

    def __init__(self, run_dir: str | os.PathLike[str], fsync: bool = False) -> None:
        self.run_dir = os.fspath(run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        self.path = os.path.join(self.run_dir, event_file_name())
        # "xb": never open a file somebody else has; unbuffered appends keep records whole.
        self._file = open(self.path, "xb", buffering=0)  # noqa: SIM115 - lives as long as self
        self._fsync = fsync
        self.bytes_written = 0
        self.write(file_version_record())

    def write(self, data: bytes) -> None:
        """Append already framed records; a short write is completed before returning."""
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            if n is None:  # pragma: no cover - only for non-blocking files
                continue
            view = view[n:]
        self.bytes_written += len(data)

    def flush(self) -> None:
        """Make the data durable as configured (``os.fsync`` when ``fsync=True``)."""
        if self._fsync and not self._file.closed:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
