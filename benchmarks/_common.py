"""Helpers shared by the benchmark scripts: timing, statistics, tables, JSON, read-back.

The read-back functions parse event files with :mod:`rayplex.tfrecord` (pure, no Ray), which
is much faster than TensorBoard's pure-Python loader and still checks every CRC.
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import platform
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# bench_before_after.py runs the scripts against other revisions and keeps their JSON apart.
RESULTS_DIR = os.environ.get("RAYPLEX_BENCH_RESULTS_DIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results")
_LOAD_AT_START = os.getloadavg()  # the machine may be shared: record how busy it was

# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100.0 * len(ordered) + 0.5)) - 1))
    return float(ordered[rank])


def median(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def summarize_ns(samples_ns: Sequence[float]) -> dict[str, float]:
    """Median / p99 / p99.9 / mean / max of per-call samples, converted to microseconds."""
    n = len(samples_ns)
    return {
        "n": n,
        "median_us": median(samples_ns) / 1e3,
        "p99_us": percentile(samples_ns, 99) / 1e3,
        "p999_us": percentile(samples_ns, 99.9) / 1e3,
        "mean_us": (sum(samples_ns) / n / 1e3) if n else float("nan"),
        "max_us": (max(samples_ns) / 1e3) if n else float("nan"),
    }


# --------------------------------------------------------------------------- timing


def call_baseline_ns(n: int = 200_000) -> float:
    """Median cost of timing an empty one-argument call with two ``perf_counter_ns`` reads.

    Subtracted from every per-call sample so that the numbers are the callee's own cost.
    """
    samples = time_calls(lambda i: None, n, subtract_ns=0.0)
    return median(samples)


def time_calls(fn: Callable[[int], Any], n: int, subtract_ns: float,
               warmup: int = 1000) -> list[float]:
    """Call ``fn(i)`` ``n`` times, timing each call on its own; returns nanoseconds per call."""
    clock = time.perf_counter_ns
    for i in range(warmup):
        fn(i)
    out = [0.0] * n
    for i in range(n):
        t0 = clock()
        fn(i)
        t1 = clock()
        out[i] = t1 - t0 - subtract_ns
    return out


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


# --------------------------------------------------------------------------- output


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1e5:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str = "") -> str:
    """Print a fixed-width table and return it as text."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import psutil

        facts["mem_total_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        facts["loadavg_1_5_15min_at_start"] = [round(x, 2) for x in _LOAD_AT_START]
        facts["loadavg_1_5_15min_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except ImportError:
        pass
    for module in ("ray", "rayplex", "tensorboardX", "tensorboard", "mlflow"):
        try:
            facts[f"{module}_version"] = __import__(module).__version__
        except Exception:
            facts[f"{module}_version"] = None
    try:  # which checkout was measured (bench_before_after.py points PYTHONPATH elsewhere)
        facts["rayplex_file"] = __import__("rayplex").__file__
    except Exception:
        facts["rayplex_file"] = None
    return facts


def write_json(name: str, args: Any, results: Any, notes: Sequence[str] = ()) -> str:
    """Write ``benchmarks/results/<name>.json``; returns its path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    payload = {
        "benchmark": name,
        "machine": machine_facts(),
        "args": vars(args) if hasattr(args, "__dict__") else args,
        "results": results,
        "notes": list(notes),
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    print(f"\nwrote {path}", flush=True)
    return path


# --------------------------------------------------------------------------- Ray


def start_ray(num_cpus: int | None = None, **kwargs: Any) -> None:
    """A fresh local Ray for this script (no dashboard, quiet)."""
    import ray

    # Tasks defined in the scripts call helpers from this module: put benchmarks/ on the
    # path of Ray's worker processes too.
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("env_vars", {})["PYTHONPATH"] = path
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # address="local": never attach to another Ray on this machine (a plain ray.init() joins
    # whatever cluster /tmp/ray/ray_current_cluster names, e.g. another user's test cluster).
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=True,
             logging_level="WARNING", log_to_driver=True, runtime_env=runtime_env,
             **kwargs)


def warm_workers(n: int, hold_s: float = 1.0) -> list[int]:
    """Start ``n`` Ray worker processes (tasks held concurrently); returns their pids."""
    import ray

    @ray.remote(num_cpus=0)
    def _hold(seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    return ray.get([_hold.remote(hold_s) for _ in range(n)])


def temp_logdir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=f"rayplex-bench-{prefix}-")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (psutil)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def process_rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --------------------------------------------------------------------------- read-back

_U64 = struct.Struct("<Q")


def _event_has_summary(payload: bytes) -> bool:
    """True if the serialized ``Event`` carries a ``summary`` (field 5), parsed by protobuf
    (the ``tensorboard`` package's compiled ``Event``; the store's indexer parses the same
    way): one decoder, not a hand-written twin."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto.event_pb2 import Event

    try:
        return bool(Event.FromString(payload).HasField("summary"))
    except DecodeError:
        return False


_RECORD_OVERHEAD = 16  # u64 length + crc(length) + crc(payload) around each payload


def _payloads(path: str, data: bytes) -> Iterable[bytes]:
    """The CRC-checked record payloads of one event file, read by rayplex itself."""
    try:
        from rayplex.tfrecord import iter_records
    except ImportError:
        # Revisions before rayplex.tfrecord existed (bench_before_after.py measures them):
        # their reader is rayplex.read.iter_event_records, which checks every CRC too.
        from rayplex.read import iter_event_records

        return iter_event_records(path)
    return iter_records(data)


def count_event_file(path: str) -> dict[str, int]:
    """Count the records of one event file: ``summaries`` (events with a summary),
    ``records`` (all intact ones), and what stopped reading before the end: ``bad_crc`` (1 if
    a whole record failed its checksum) and ``torn_tail_bytes`` (bytes left unread)."""
    with open(path, "rb") as f:
        data = f.read()
    records = summaries = consumed = 0
    for payload in _payloads(path, data):
        records += 1
        consumed += len(payload) + _RECORD_OVERHEAD
        if _event_has_summary(payload):
            summaries += 1
    tail = len(data) - consumed
    whole = tail >= 12 and _U64.unpack_from(data, consumed)[0] + _RECORD_OVERHEAD <= tail
    return {"records": records, "summaries": summaries, "bad_crc": int(whole),
            "torn_tail_bytes": tail}


def event_files(root: str) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "**", "events.out.tfevents.*"), recursive=True))


def count_event_dir(root: str) -> dict[str, int]:
    """Sum :func:`count_event_file` over every event file below ``root``."""
    total = {"files": 0, "records": 0, "summaries": 0, "bad_crc": 0, "torn_tail_bytes": 0}
    for path in event_files(root):
        counts = count_event_file(path)
        total["files"] += 1
        for key, value in counts.items():
            total[key] += value
    return total


def count_event_dir_tensorboard(root: str) -> dict[str, int]:
    """Slow cross-check: count summary values with TensorBoard's own ``EventFileLoader``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    total = {"files": 0, "records": 0, "summaries": 0}
    for path in event_files(root):
        total["files"] += 1
        for event in EventFileLoader(path).Load():
            total["records"] += 1
            total["summaries"] += len(event.summary.value)
    return total


def count_mlflow_points(root: str) -> int:
    """Metric points in an MLflow file store: one line per point in ``*/metrics/*`` files."""
    total = 0
    for path in glob.glob(os.path.join(root, "*", "*", "metrics", "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                total += sum(1 for line in f if line.strip())
    return total


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# --------------------------------------------------------------------------- profiling


def _default_sigint() -> None:
    # Ray worker processes block or ignore SIGINT, and children inherit that: py-spy would
    # never hear the Ctrl-C that makes it write its output.
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class PySpy:
    """Sample process ``pid`` with ``py-spy record --format raw`` while the block runs.

    ``with PySpy(pid, "hub.txt"): ...``; afterwards :func:`top_frames` summarizes the file.
    Does nothing (and says so) when py-spy is not installed next to this Python.
    """

    def __init__(self, pid: int, output: str, rate: int = 100, threads: bool = True,
                 gil_only: bool = True) -> None:
        self.pid = pid
        self.output = output
        self.rate = rate
        self.threads = threads
        self.gil_only = gil_only
        self._proc: Any = None

    @staticmethod
    def executable() -> str | None:
        import shutil

        candidate = os.path.join(os.path.dirname(sys.executable), "py-spy")
        return candidate if os.path.exists(candidate) else shutil.which("py-spy")

    def __enter__(self) -> PySpy:
        import subprocess

        exe = self.executable()
        if exe is None:
            print("py-spy not found: no profile", flush=True)
            return self
        cmd = [exe, "record", "-p", str(self.pid), "-f", "raw", "-r", str(self.rate),
               "-o", self.output]
        if self.threads:
            cmd.append("--threads")
        if self.gil_only:  # only samples holding the GIL: Python work, not waiting
            cmd.append("--gil")
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      preexec_fn=_default_sigint)
        time.sleep(0.5)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except Exception:
                self._proc.kill()


def top_frames(path: str, top: int = 12) -> dict[str, Any]:
    """Summarize a py-spy raw (collapsed) profile: the functions with the most samples on
    top of the stack (self) and anywhere in it (total), as percentages of all samples."""
    import re
    from collections import Counter

    strip_line = re.compile(r":\d+\)$")
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    if not os.path.exists(path):
        return {"samples": 0, "self": [], "total": [], "threads": []}
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = [strip_line.sub(")", fr) for fr in stack.split(";")]
            if frames and frames[0].startswith(("thread (", "process ")):
                threads[frames[0]] += count
                frames = [fr for fr in frames if not fr.startswith(("thread (", "process "))]
            if not frames:
                continue
            samples += count
            self_counts[frames[-1]] += count
            for fr in set(frames):
                total_counts[fr] += count

    def pct(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100.0 * n / samples, 1)] for name, n in counter.most_common(top)]

    return {"samples": samples, "self": pct(self_counts), "total": pct(total_counts),
            "threads": [[name, round(100.0 * n / max(samples, 1), 1)]
                        for name, n in threads.most_common()]}
