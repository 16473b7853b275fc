"""The ``rayplex`` command: ``demo | board | view | ls | export | plot | tail | index``.

Every command but ``demo`` reads a finished (or live) logdir from disk and needs no Ray. A bad
logdir, a missing optional package or an empty selection is one line on stderr and exit code 1;
a usage error (unknown command or option, with a did-you-mean) exits with 2; success with 0.
A logdir on object storage (a URI ``pyarrow.fs`` resolves: ``s3://...``) is read from a local
copy synced from the bucket first (:func:`rayplex.remote.readable`; ``board`` says so); a
``scheme://`` it cannot resolve is such an error, checked before anything starts; in ``ls``,
a client whose files cannot be read is an error row and the rest is listed.
Runs and tags are listed in natural order (``agent/2`` before ``agent/10``). Colour only on a
terminal, and never when ``NO_COLOR`` is set.

Example:
    >>> main(["ls", "/tmp/exp1"])  # doctest: +SKIP
    >>> main(["export", "/tmp/exp1", "--tag", "agent/reward/*", "-o", "reward.csv"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import io
import itertools
import json
import math
import os
import shlex
import sys
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from rayplex.config import CLI_MAX_PLOTS, CLI_ROWS_SHOWN
from rayplex.rules import natural_key as natural_key  # one order of names: the CLI's and the viewer's

if TYPE_CHECKING:  # pragma: no cover
    from rayplex.read import ScalarTable

_FORMATS = ("csv", "json", "parquet")
COMMANDS = ("demo", "board", "view", "ls", "export", "plot", "tail", "index", "alerts")
# Groups rayplex writes itself (rules.RESERVED_GROUPS), explained under `rayplex ls`'s groups table.
_OWN_GROUPS = {
    "hparams": "HParams sessions of add_hparams/log_params, run hparams/<group>/<name>",
    "rayplex": "the hub's own log lines (client rayplex/hub, logs/rayplex/hub.log)",
    "system": "node telemetry of the node buffers, run system/<node> (RAYPLEX_TELEMETRY_S)",
}


# ----------------------------------------------------------------------------- helpers


def _size(n: int) -> str:
    """Bytes in human units: ``1.5 MB``."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _value(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def _literal(text: str) -> Any:
    """A table cell that shows ``text`` as it is: no rich markup, control characters escaped
    (tags, runs and paths may come from any process or foreign file)."""
    from rich.text import Text

    from rayplex.terminal import escape_controls

    return Text(escape_controls(text))


def _plain(text: str) -> str:
    """``text`` for a rich markup string: shown literally, control characters escaped."""
    from rich.markup import escape

    from rayplex.terminal import escape_controls

    return escape(escape_controls(text))


def _console() -> Any:
    from rich.console import Console

    from rayplex.terminal import color_enabled

    if not sys.stdout.isatty():
        # Piped output keeps whole lines (no folding at 80 columns) and has no escape codes.
        return Console(width=200, color_system=None)
    return Console() if color_enabled(sys.stdout) else Console(color_system=None)


def _select(args: argparse.Namespace) -> ScalarTable:
    """The scalars chosen by ``--tag/--run/--group``; an empty choice is an error."""
    from rayplex.read import read_scalars

    rows = read_scalars(args.logdir, group=args.group, tag=args.tag, run=args.run)
    if rows:
        return rows
    chosen = [f"--{name} {value!r}" for name, value in
              (("tag", args.tag), ("run", args.run), ("group", args.group)) if value]
    if not chosen:
        raise ValueError(f"no scalars in {args.logdir}")
    tags = read_scalars(args.logdir).tags()
    known = ", ".join(tags[:20]) + (" ..." if len(tags) > 20 else "")
    raise ValueError(f"no scalars match {' '.join(chosen)} in {args.logdir}"
                     + (f"; scalar tags: {known}" if tags else ""))


def _add_logdir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", help="the experiment's logdir (the directory given to rayplex.init)")


def _add_selection(parser: argparse.ArgumentParser, tag_required: bool = False) -> None:
    parser.add_argument("--tag", required=tag_required, metavar="PATTERN",
                        help="tags equal to this or matching it as a glob ('agent/reward/*')")
    parser.add_argument("--run", metavar="PATTERN", help="runs equal to or matching this ('agent/*')")
    parser.add_argument("--group", metavar="GROUP", help="runs of this client group only")


# ----------------------------------------------------------------------------- demo


def _demo(args: argparse.Namespace) -> int:
    from rayplex.demo import run_demo

    logdir = os.path.abspath(os.path.expanduser(args.logdir))
    print(f"rayplex demo: {args.workers} agents + {args.evaluators} evaluators + 1 learner, "
          f"{args.seconds:g} s, logging into {logdir}", flush=True)
    result = run_demo(logdir, workers=args.workers, evaluators=args.evaluators,
                      seconds=args.seconds, address=args.address, progress=True)
    # Plain print, never rich: the commands below must stay whole lines when piped or pasted.
    rate = result.records / max(result.seconds, 1e-9)
    print(f"done: {result.clients} clients wrote {result.records:,} records "
          f"({_size(result.bytes)}) in {result.seconds:.1f} s, {rate:,.0f} records/s")
    print(f"logdir: {result.logdir}")
    print("view it with any of:")
    for line in view_commands(result.logdir):
        print(f"  {line}")
    sys.stdout.flush()
    if args.view:
        return _serve_view(result.logdir, args.host, args.port or 0, open_browser=False)
    if args.board:
        return _serve(result.logdir, args.host, 6006 if args.port is None else args.port)
    return 0


def view_commands(logdir: str) -> list[str]:
    """The one-line shell commands that show ``logdir`` (TensorBoard, then rayplex's viewer),
    quoted for pasting.

    Example:
        >>> for line in view_commands("/tmp/my exp"):
        ...     print(line)
        rayplex board '/tmp/my exp'
        tensorboard --logdir '/tmp/my exp/tensorboard'
        rayplex view '/tmp/my exp'
    """
    from rayplex.layout import tensorboard_dir

    return [f"rayplex board {shlex.quote(logdir)}",
            f"tensorboard --logdir {shlex.quote(tensorboard_dir(logdir))}",
            f"rayplex view {shlex.quote(logdir)}"]


# ----------------------------------------------------------------------------- board


def _serve(logdir: str, host: str, port: int) -> int:
    from rayplex.board import Stopped, start_board, stop_on_signals

    # SIGTERM/SIGHUP (and Ctrl-C) unwind through the `finally`s below and start_board's own
    # clean-up: TensorBoard is stopped and waited for, never left serving on its own.
    with stop_on_signals():
        try:
            board = start_board(logdir, host=host, port=port)
            try:
                print(f"TensorBoard on {board.tensorboard_dir}: {board.url}  (Ctrl-C to stop)",
                      flush=True)
                code = board.wait()
                last = (board.output().strip().splitlines() or ["no output"])[-1]
            finally:
                board.stop()
        except (KeyboardInterrupt, Stopped):
            return 0
    if code != 0:
        print(f"rayplex board: error: TensorBoard exited with code {code}: {last}", file=sys.stderr)
        return 1
    return 0


def _board(args: argparse.Namespace) -> int:
    return _serve(args.logdir, args.host, args.port)


# ----------------------------------------------------------------------------- view


def _view(args: argparse.Namespace) -> int:
    return _serve_view(args.logdir, args.host, args.port, open_browser=args.open)


def _serve_view(logdir: str, host: str, port: int, open_browser: bool) -> int:
    """``rayplex view LOGDIR``: index the logdir if it has no store yet, then serve the page."""
    from rayplex.board import Stopped, stop_on_signals
    from rayplex.store.format import Layout, require_store_deps
    from rayplex.view.server import serve

    require_store_deps("rayplex view")
    layout = Layout.of(logdir)
    if not layout.manifest.exists():
        print(f"rayplex view: indexing {layout.logdir} (once; the store is kept up to date "
              "from then on)", file=sys.stderr, flush=True)
        report = _index_logdir(str(layout.logdir), quiet=False)
        print(f"rayplex view: indexed {report.points:,} points in {report.seconds:.1f} s",
              file=sys.stderr, flush=True)
    # uvicorn stops gracefully on SIGINT/SIGTERM and then raises the signal again: Ctrl-C
    # arrives here as KeyboardInterrupt, SIGTERM/SIGHUP as Stopped; both are a clean stop.
    with stop_on_signals():
        try:
            return serve(str(layout.logdir), host=host, port=port, open_browser=open_browser)
        except (KeyboardInterrupt, Stopped):
            return 0


# ----------------------------------------------------------------------------- ls


def _ls(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rayplex.read import summarize

    summary = summarize(args.logdir)
    console = _console()
    limit = None if args.all else CLI_ROWS_SHOWN

    def show(table: Table, rows: list[tuple[str, ...]], what: str) -> None:
        for row in rows[:limit]:
            table.add_row(*(_literal(cell) for cell in row))
        console.print(table)
        if limit is not None and len(rows) > limit:
            console.print(f"  ... and {len(rows) - limit} more {what} (--all shows them)")

    points = sum(run.points for run in summary.runs)
    own = [g for g in summary.groups if g in _OWN_GROUPS]
    user_groups = sorted((g for g in summary.groups if g not in _OWN_GROUPS), key=natural_key)
    console.print(f"[bold]{_plain(summary.logdir)}[/bold]: {_size(summary.total_bytes)}, "
                  f"{len(user_groups)} groups, {len(summary.runs)} runs, "
                  f"{len({t.tag for t in summary.tags})} tags, {points:,} points")

    groups = Table(title="groups")
    for column in ("group", "runs", "clients", "tags", "points", "last step", "events size"):
        groups.add_column(column, justify="left" if column == "group" else "right")
    for group in user_groups:
        runs = [r for r in summary.runs if r.group == group]
        tags = {t.tag for t in summary.tags if t.run.split("/", 1)[0] == group}
        clients = [c for c in summary.clients if c.split("/", 1)[0] == group]
        last = max((r.last_step for r in runs if r.last_step is not None), default=None)
        groups.add_row(_literal(group), str(len(runs)), str(len(clients)), str(len(tags)),
                       f"{sum(r.points for r in runs):,}", "" if last is None else str(last),
                       _size(sum(r.bytes for r in runs)))
    console.print(groups)
    for group in own:
        console.print(f"  also {group}/: {_OWN_GROUPS[group]}")

    runs_table = Table(title="runs (one per client, or one per normal group)")
    for column in ("run", "tags", "points", "last step", "event files", "size"):
        runs_table.add_column(column, justify="left" if column == "run" else "right")
    show(runs_table, [
        (r.run, str(r.tags), f"{r.points:,}", "" if r.last_step is None else str(r.last_step),
         str(r.event_files), _size(r.bytes))
        for r in sorted(summary.runs, key=lambda r: natural_key(r.run))
    ], "runs")

    by_tag: dict[str, list[Any]] = defaultdict(list)
    for t in summary.tags:
        by_tag[t.tag].append(t)
    tags_table = Table(title="tags")
    for column in ("tag", "kind", "runs", "points", "last step", "last value"):
        tags_table.add_column(column, justify="left" if column in ("tag", "kind") else "right")
    show(tags_table, [
        (tag, entries[0].kind, str(len(entries)), f"{sum(e.points for e in entries):,}",
         str(max(e.last_step for e in entries)),
         _value(entries[0].last_value) if len(entries) == 1 else "")
        for tag, entries in sorted(by_tag.items(), key=lambda item: natural_key(item[0]))
    ], "tags")

    if summary.artifacts:
        artifacts = Table(title="artifacts")
        artifacts.add_column("path")
        artifacts.add_column("size", justify="right")
        show(artifacts, [(a.path, _size(a.size))
                         for a in sorted(summary.artifacts, key=lambda a: natural_key(a.path))],
             "artifacts")
    if summary.log_files:
        logs = Table(title="text logs")
        logs.add_column("file")
        logs.add_column("size", justify="right")
        show(logs, [(f.path, _size(f.bytes))
                    for f in sorted(summary.log_files, key=lambda f: natural_key(f.path))],
             "log files")
    if summary.params:
        params = ", ".join(sorted(summary.params, key=natural_key))
        console.print(f"params: {_plain(params)}  (rayplex.read_params)")
    if summary.errors:
        errors = Table(title="errors (these clients' files could not be read; the rest is listed)")
        errors.add_column("client")
        errors.add_column("error")
        show(errors, sorted(summary.errors.items(), key=lambda item: natural_key(item[0])),
             "errors")
    jobs = _client_rows(args.logdir, summary.clients, time.time())
    if jobs:
        jobs_table = Table(title="clients (state: running / finished / silent / crashed; last "
                                 "alert: rayplex alerts; job status: logger.job_*; last seen: "
                                 "logger.ping)")
        for column in ("client", "state", "last alert", "job status", "ping status",
                       "last seen", "host"):
            jobs_table.add_column(column, justify="right" if column == "last seen" else "left")
        show(jobs_table, jobs, "clients")
    return 0


def _ago(seconds: float) -> str:
    """``"5 s ago"``, ``"3 min ago"``, ``"2.5 h ago"``, ``"4.0 d ago"``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def _client_rows(logdir: str, clients: list[str], now: float) -> list[tuple[str, ...]]:
    """One row per client (seen in the logdir, with a job status, a heartbeat or an alert):
    client, state, last alert, job status, ping status, last seen, host."""
    from rayplex.actors.control import read_control
    from rayplex.layout import CONTROL_FILE
    from rayplex.read import client_states, read_params
    from rayplex.watch import alerts

    try:
        beats = read_control(logdir).heartbeats
    except RecursionError:  # a hostile file: the rest of the listing still stands
        print(f"rayplex ls: {CONTROL_FILE} is nested too deeply to read; heartbeats are not "
              "shown", file=sys.stderr)
        beats = {}
    statuses: dict[str, str] = {}
    for client, params in read_params(logdir, errors={}).items():  # errors: shown by ls
        job = params.get("job")
        if isinstance(job, dict) and "status" in job:
            statuses[client] = str(job["status"])
    alert_list = alerts(logdir)
    alerted = {alert.client for alert in alert_list if alert.client}
    everyone = sorted(set(clients) | set(statuses) | set(beats) | alerted, key=natural_key)
    rows: list[tuple[str, ...]] = []
    for client, state, alert in client_states(logdir, everyone, heartbeats=beats,
                                              alert_list=alert_list):
        beat = beats.get(client, {})
        seen = beat.get("time")
        last_alert = "" if alert is None else (
            f"{alert.rule}" + ("" if alert.step is None else f" at step {alert.step}")
            + f", {_ago(now - alert.wall_time)}")
        rows.append((client, state, last_alert, statuses.get(client, ""),
                     str(beat.get("status", "")),
                     _ago(now - seen) if isinstance(seen, (int, float)) else "",
                     str(beat.get("hostname", ""))))
    return rows


# ----------------------------------------------------------------------------- export


def _write_csv(rows: ScalarTable, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows.columns)
    writer.writerows(rows)


def _write_json(rows: ScalarTable, out: TextIO) -> None:
    # Non-finite values are written as NaN / Infinity, as Python's json module reads them.
    json.dump([row._asdict() for row in rows], out, indent=None)
    out.write("\n")


def _write_parquet(rows: ScalarTable, path: str) -> None:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError("--format parquet needs pyarrow: pip install pyarrow") from None
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(rows.columns)
    types = [pyarrow.string(), pyarrow.string(), pyarrow.int64(), pyarrow.float64(),
             pyarrow.float64()]
    table = pyarrow.table({name: pyarrow.array(list(col), type=kind)
                           for name, col, kind in zip(rows.columns, columns, types, strict=True)})
    pyarrow.parquet.write_table(table, path)


def _export_tables(tables: Iterator[Any], fmt: str,
                   output: str | None) -> tuple[int, int, int] | None:
    """Write the store's tables as they come (a Parquet row group, CSV or JSON lines per
    table): bounded memory. ``(rows, runs, tags)``, or None if there is no row (then the
    event-file path says why)."""
    import pyarrow
    import pyarrow.parquet

    first = next(tables, None)
    if first is None or first.num_rows == 0:
        return None
    rows, runs, tags = 0, set(), set()
    schema = pyarrow.schema([("run", pyarrow.string()), ("tag", pyarrow.string()),
                             ("step", pyarrow.int64()), ("wall_time", pyarrow.float64()),
                             ("value", pyarrow.float64())])
    with contextlib.ExitStack() as stack:
        writer: Any = None
        out: TextIO = sys.stdout
        if fmt == "parquet":
            assert output is not None
            writer = stack.enter_context(pyarrow.parquet.ParquetWriter(output, schema))
        elif output:
            out = stack.enter_context(open(output, "w", encoding="utf-8", newline=""))
        csv_writer = csv.writer(out, lineterminator="\n")
        if fmt == "csv":
            csv_writer.writerow(schema.names)
        elif fmt == "json":
            out.write("[")
        for table in itertools.chain([first], tables):
            runs.update(table.column("run").unique().to_pylist())
            tags.update(table.column("tag").unique().to_pylist())
            if writer is not None:
                writer.write_table(table.cast(schema))
            else:
                columns = [table.column(name).to_pylist() for name in schema.names]
                if fmt == "csv":
                    csv_writer.writerows(zip(*columns, strict=True))
                else:
                    for row in zip(*columns, strict=True):
                        out.write((", " if rows else "")
                                  + json.dumps(dict(zip(schema.names, row, strict=True))))
                        rows += 1
                    continue
            rows += table.num_rows
        if fmt == "json":
            out.write("]\n")
        out.flush()
    return rows, len(runs), len(tags)


def _export(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None:
        suffix = os.path.splitext(args.output or "")[1].lstrip(".").lower()
        fmt = suffix if suffix in _FORMATS else "csv"
    if fmt == "parquet" and not args.output:
        raise ValueError("--format parquet writes a file: give -o FILE")
    from rayplex.read import stored_scalars

    with stored_scalars(args.logdir, args.group, args.tag, args.run) as tables:
        if tables is not None:
            written = _export_tables(tables, fmt, args.output)
            if written is not None:
                if args.output:
                    print(f"wrote {written[0]:,} rows ({written[1]} runs, {written[2]} tags) "
                          f"to {args.output}", file=sys.stderr)
                return 0
    rows = _select(args)
    if fmt == "parquet":
        _write_parquet(rows, args.output)
    else:
        buffer = io.StringIO()
        (_write_csv if fmt == "csv" else _write_json)(rows, buffer)
        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                out.write(buffer.getvalue())
        else:
            sys.stdout.write(buffer.getvalue())
            sys.stdout.flush()
    if args.output:
        print(f"wrote {len(rows):,} rows ({len(rows.runs())} runs, {len(rows.tags())} tags) "
              f"to {args.output}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- plot


def _plot(args: argparse.Namespace) -> int:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('rayplex plot needs matplotlib: pip install "rayplex[media]"') from None
    rows = _select(args)
    curves: dict[str, dict[str, tuple[list[int], list[float]]]] = defaultdict(dict)
    for row in rows:
        steps, values = curves[row.tag].setdefault(row.run, ([], []))
        steps.append(row.step)
        values.append(row.value)
    tags = sorted(curves, key=natural_key)
    if len(tags) > CLI_MAX_PLOTS:
        print(f"rayplex plot: {len(tags)} tags match; drawing the first {CLI_MAX_PLOTS} "
              f"(narrow --tag to choose)", file=sys.stderr)
        tags = tags[:CLI_MAX_PLOTS]
    ncols = min(3, len(tags))
    nrows = math.ceil(len(tags) / ncols)
    figure = Figure(figsize=(5.5 * ncols, 3.8 * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    for i, tag in enumerate(tags, start=1):
        axes = figure.add_subplot(nrows, ncols, i)
        for run, (steps, values) in sorted(curves[tag].items(), key=lambda item: natural_key(item[0])):
            axes.plot(steps, values, label=run, linewidth=1.2)
        axes.set_title(tag, fontsize=10)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if len(curves[tag]) <= 12:
            axes.legend(fontsize=8)
    figure.savefig(args.output, dpi=args.dpi)
    print(f"wrote {args.output} ({len(tags)} charts, {len(rows.runs())} runs)")
    return 0


# ----------------------------------------------------------------------------- tail


def _last_records(lines: Iterable[str], count: int) -> list[str]:
    """The lines of the last ``count`` records: a header line with its continuation lines."""
    from rayplex.textlog import CONTINUATION_PREFIX

    records: deque[list[str]] = deque(maxlen=count) if count > 0 else deque(maxlen=1)
    for line in lines:
        if line.startswith(CONTINUATION_PREFIX) and records:
            records[-1].append(line)
        else:
            records.append([line])
    return [line for record in records for line in record] if count > 0 else []


def _tail(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rayplex import tail, textlog
    from rayplex.layout import all_log_path
    from rayplex.read import check_logdir
    from rayplex.terminal import color_enabled, escape_controls
    from rayplex.tfrecord import NotRegularFileError, open_regular

    path = Path(all_log_path(check_logdir(args.logdir)))
    if args.level is not None:
        textlog.parse_level(args.level)  # a bad level is an error before anything prints
    tty = sys.stdout.isatty()
    colour = color_enabled(sys.stdout)
    out = sys.stdout

    def display(line: str) -> str:
        # On a terminal, log text must not drive it: escape controls, then add our own colours.
        if not tty:
            return line
        line = escape_controls(line)
        return tail.colorize(line) if colour else line

    def backlog() -> Iterator[str]:
        try:
            binary = open_regular(path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no text logs in {args.logdir}: {path} does not exist") from None
        with io.TextIOWrapper(binary, encoding="utf-8", errors="replace") as file:
            lines: Iterable[str] = tail.filter_lines(file, client=args.client, level=args.level)
            if args.lines is not None:
                lines = _last_records(lines, args.lines)
            yield from lines

    try:
        if args.follow:
            if path.exists() and not path.is_file():
                raise NotRegularFileError(f"{str(path)!r} is not a regular file")
            from_start = args.lines is None or not path.exists()
            if not from_start:
                for line in backlog():
                    out.write(display(line))
                out.flush()
            lines = tail.filter_lines(_follow(path, from_start=from_start), client=args.client,
                                         level=args.level)
            for line in lines:
                out.write(display(line))
                out.flush()
        else:
            for line in backlog():
                out.write(display(line))
    except KeyboardInterrupt:
        return 0
    return 0


def _follow(path: os.PathLike[str], from_start: bool = True) -> Any:
    """``tail.follow`` (a seam for tests, which need to stop it)."""
    from rayplex.tail import follow

    return follow(path, from_start=from_start)


# ----------------------------------------------------------------------------- parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none (``None``, a flag's ``False``) or the
    help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


# ----------------------------------------------------------------------------- index


def _index_logdir(logdir: str, quiet: bool, compaction: bool = True) -> Any:
    """:func:`rayplex.store.index` with a progress bar on stderr (on a terminal, unless
    ``quiet``); its :class:`~rayplex.store.IndexReport`."""
    from rich.console import Console

    from rayplex.store import index

    console = Console(stderr=True)  # the bar on stderr, the summary line on stdout
    if quiet or not console.is_terminal:
        return index(logdir, compaction=compaction)
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("indexing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return index(logdir, progress=progress, compaction=compaction)


def _index(args: argparse.Namespace) -> int:
    """``rayplex index LOGDIR``: build or extend the columnar store, with a progress bar."""
    report = _index_logdir(args.logdir, args.quiet, compaction=not args.no_compact)
    if not args.quiet:
        notes = []
        if report.orphans_removed:
            notes.append(f"removed {len(report.orphans_removed)} uncommitted file(s)")
        if report.rebuilt:
            notes.append(f"rebuilt torn segment(s) {', '.join(report.rebuilt)}")
        if report.shrunk:
            notes.append(f"{len(report.shrunk)} event file(s) shorter than indexed, not re-read")
        if report.compacted:
            notes.append(f"merged {report.compacted} segments")
        print(f"indexed {report.points:,} points ({_size(report.bytes_read)} of event files) in "
              f"{report.seconds:.1f} s into {report.logdir}/store: {_size(report.store_bytes)}, "
              f"{report.ratio:.2f}x the event files" + "".join(f"; {n}" for n in notes))
    return 0


def _add_index_command(command: Any) -> None:
    index = command(
        "index", help="build the columnar store (read_series, sql) of any TensorBoard logdir",
        description="Index every scalar of LOGDIR's event files into LOGDIR/store (Parquet "
                    "segments with multi-resolution pyramids), or add what they gained since "
                    "the last run. Works on any TensorBoard logdir (tensorboardX, "
                    "torch.utils.tensorboard, Lightning, Tensorplex). Safe to interrupt. Needs "
                    'pip install "rayplex[store]".',
    )
    index.add_argument("logdir", help="a rayplex logdir or any TensorBoard logdir")
    index.add_argument("--no-compact", action="store_true",
                       help="do not merge small segments afterwards")
    index.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    index.set_defaults(func=_index)


def build_parser() -> argparse.ArgumentParser:
    from rayplex import __version__

    parser = argparse.ArgumentParser(
        prog="rayplex", description="Distributed logging on Ray.", formatter_class=_HelpFormatter,
        epilog="exit codes: 0 success, 1 error, 2 usage error. NO_COLOR=1 turns colours off.")
    parser.add_argument("--version", action="version", version=f"rayplex {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     title="commands")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, formatter_class=_HelpFormatter, **kwargs)

    demo = command("demo", help="log from ~50 Ray tasks and actors into one logdir",
                   description="Start a local Ray (or join --address), log from agent tasks, "
                               "evaluator actors and a learner for --seconds, then print how to "
                               "view the logdir.")
    demo.add_argument("--logdir", default="./rayplex_logs/demo", help="where to write")
    demo.add_argument("--workers", type=int, default=40, help="agent tasks (indexed group)")
    demo.add_argument("--evaluators", type=int, default=8, help="evaluator actors (combined group)")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to log")
    demo.add_argument("--address", default=None,
                      help="join this Ray cluster (default: start a local Ray)")
    demo.add_argument("--board", action="store_true", help="then serve the logdir with TensorBoard")
    demo.add_argument("--view", action="store_true",
                      help="then serve the logdir with rayplex view (the web viewer)")
    demo.add_argument("--port", type=int, default=None,
                      help="the port with --board (default: 6006) or --view (default: a free one)")
    demo.add_argument("--host", default="127.0.0.1", help="the address to bind with --board or --view")
    demo.set_defaults(func=_demo)

    board = command(
        "board", help="serve a logdir with TensorBoard",
        description="Start TensorBoard on LOGDIR/tensorboard, print its URL and wait (Ctrl-C "
                    "or SIGTERM stops it and TensorBoard).",
    )
    _add_logdir(board)
    board.add_argument("--port", type=int, default=6006, help="port to serve on; 0 picks a free one")
    board.add_argument("--host", default="127.0.0.1",
                       help="address to bind; 0.0.0.0 serves other machines too")
    board.set_defaults(func=_board)

    view = command(
        "view", help="a live web page of every run's scalars (thousands of runs, every spike)",
        description="Serve a page with the run table and one chart per tag of LOGDIR, read "
                    "from its columnar store (indexed first if there is none; kept up to date "
                    "while the page is open), and print its URL. Works on a live or finished "
                    "rayplex logdir and on any TensorBoard logdir; no Ray, no network access. "
                    "Ctrl-C or SIGTERM stops it. Needs pip install \"rayplex[view]\".",
    )
    view.add_argument("logdir", help="a rayplex logdir or any TensorBoard logdir")
    view.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    view.add_argument("--host", default="127.0.0.1",
                      help="address to bind; any other than loopback serves other machines "
                           "(with a warning: the page has no login)")
    view.add_argument("--open", action="store_true", help="open the page in a web browser")
    view.set_defaults(func=_view)

    ls = command(
        "ls", help="an experiment at a glance",
        description="Groups, runs, tags (last step, points), artifacts, text logs and sizes.",
    )
    _add_logdir(ls)
    ls.add_argument("--all", action="store_true",
                    help=f"show every row (default: {CLI_ROWS_SHOWN} per table)")
    ls.set_defaults(func=_ls)

    export = command(
        "export", help="scalars to CSV, JSON or Parquet",
        description="Write the columns run, tag, step, wall_time, value to stdout (csv, json) or "
                    "to -o FILE.",
    )
    _add_logdir(export)
    export.add_argument("--format", choices=_FORMATS,
                        help="output format (default: from -o's suffix, else csv)")
    _add_selection(export)
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    export.set_defaults(func=_export)

    plot = command(
        "plot", help="draw scalar curves into a PNG",
        description="One chart per matching tag, one line per run.",
    )
    _add_logdir(plot)
    _add_selection(plot, tag_required=True)
    plot.add_argument("-o", "--output", metavar="FILE", default="scalars.png", help="image file")
    plot.add_argument("--dpi", type=int, default=100, help="resolution")
    plot.set_defaults(func=_plot)

    tail = command(
        "tail", help="print the text logs, filtered",
        description="Print LOGDIR/logs/all.log, keeping the records of one client or group and/or "
                    "those at or above a level.",
    )
    _add_logdir(tail)
    tail.add_argument("--client", metavar="ID", help="a client 'agent/3' or a whole group 'agent'")
    tail.add_argument("--level", metavar="LEVEL", help="minimum level: WARNING, INFO5, 15, ...")
    tail.add_argument("-n", "--lines", type=_count, metavar="N",
                      help="only the last N records, a record with its continuation lines "
                           "(default: all)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    tail.set_defaults(func=_tail)
    _add_index_command(command)
    alerts = command(
        "alerts", help="print the watch rules' alerts",
        description="Print LOGDIR/alerts.jsonl, one alert a line: time, rule, client, node, pid, "
                    "step, value, median and message (rayplex.alerts reads it in Python).",
    )
    _add_logdir(alerts)
    alerts.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new alerts (Ctrl-C stops)")
    alerts.set_defaults(func=_alerts)
    return parser


def _alerts(args: argparse.Namespace) -> int:
    from rayplex.read import check_logdir
    from rayplex.terminal import escape_controls
    from rayplex.watch import alerts

    logdir = check_logdir(args.logdir)
    shown = 0
    while True:
        found = alerts(logdir)
        for alert in found[shown:]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(alert.wall_time))
            fields = [when, alert.rule, alert.client or "-", alert.node[:12] or "-",
                      "-" if alert.pid is None else str(alert.pid),
                      "-" if alert.step is None else str(alert.step),
                      "-" if alert.value is None else f"{alert.value:g}",
                      "-" if alert.median is None else f"{alert.median:g}", alert.message]
            print(escape_controls("  ".join(fields)), flush=True)
        shown = max(shown, len(found))
        if not args.follow:
            return 0
        time.sleep(0.5)  # polling the file for new alerts until Ctrl-C


def _unknown_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """A misspelt command is a usage error (exit 2) that suggests the closest one."""
    # The top-level options (-h, --version) take no value: the first other word is the command.
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    if word is None or word in COMMANDS:
        return
    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (choose from {', '.join(COMMANDS)})"
    parser.error(f"unknown command {word!r}{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    _unknown_command(parser, argv)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "logdir", None) is not None:
            from rayplex.remote import resolve
            from rayplex.rules import local_logdir

            if resolve(args.logdir) is None:  # before anything starts (demo: Ray; board: TB)
                local_logdir(args.logdir)
            elif args.command == "board":
                from rayplex.remote import cache_dir

                target = resolve(args.logdir)
                assert target is not None
                print(f"rayplex board: TensorBoard reads a synced local copy of {target.uri} "
                      f"in {cache_dir(target)} (synced now; run again to sync what came since)",
                      file=sys.stderr)
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `rayplex export ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"rayplex {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
