"""The ``rayplex`` command: ``demo | board | ls | export | plot | tail``.

Every command but ``demo`` reads a finished (or live) logdir from disk and needs no Ray. A bad
logdir, a missing optional package or an empty selection is one line on stderr and exit code 1.

Example:
    >>> main(["ls", "/tmp/exp1"])  # doctest: +SKIP
    >>> main(["export", "/tmp/exp1", "--tag", "agent/reward/*", "-o", "reward.csv"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from rayplex.read import ScalarTable

_ROWS_SHOWN = 30  # per table in `rayplex ls`, unless --all
_MAX_PLOTS = 12  # charts in one `rayplex plot` image
_FORMATS = ("csv", "json", "parquet")


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

    # Piped output keeps whole lines (no folding at 80 columns) and has no colour codes.
    return Console() if sys.stdout.isatty() else Console(width=200, no_color=True)


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
    from rich.console import Console
    from rich.table import Table

    from rayplex.demo import run_demo

    console = Console()
    logdir = os.path.abspath(os.path.expanduser(args.logdir))
    console.print(f"rayplex demo: {args.workers} agents + {args.evaluators} evaluators + 1 learner, "
                  f"{args.seconds:g} s, logging into {logdir}")
    result = run_demo(logdir, workers=args.workers, evaluators=args.evaluators,
                      seconds=args.seconds, address=args.address, progress=True)
    table = Table(title="rayplex demo")
    for column in ("clients", "records", "bytes on disk", "records/s"):
        table.add_column(column, justify="right")
    table.add_row(str(result.clients), f"{result.records:,}", f"{result.bytes:,}",
                  f"{result.records / max(result.seconds, 1e-9):,.0f}")
    console.print(table)
    console.print(f"logdir: {_plain(result.logdir)}")
    console.print(f"view it: tensorboard --logdir "
                  f"{_plain(os.path.join(result.logdir, 'tensorboard'))}")
    if args.board:
        return _serve(result.logdir, args.host, args.port)
    return 0


# ----------------------------------------------------------------------------- board


def _serve(logdir: str, host: str, port: int) -> int:
    from rayplex.board import start_board

    board = start_board(logdir, host=host, port=port)
    try:
        print(f"TensorBoard on {board.tensorboard_dir}: {board.url}  (Ctrl-C to stop)", flush=True)
        code = board.wait()
        last = (board.output().strip().splitlines() or ["no output"])[-1]
    except KeyboardInterrupt:
        return 0
    finally:
        board.stop()
    if code != 0:
        print(f"rayplex board: error: TensorBoard exited with code {code}: {last}", file=sys.stderr)
        return 1
    return 0


def _board(args: argparse.Namespace) -> int:
    return _serve(args.logdir, args.host, args.port)


# ----------------------------------------------------------------------------- ls


def _ls(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rayplex.read import summarize

    summary = summarize(args.logdir)
    console = _console()
    limit = None if args.all else _ROWS_SHOWN

    def show(table: Table, rows: list[tuple[str, ...]], what: str) -> None:
        for row in rows[:limit]:
            table.add_row(*(_literal(cell) for cell in row))
        console.print(table)
        if limit is not None and len(rows) > limit:
            console.print(f"  ... and {len(rows) - limit} more {what} (--all shows them)")

    points = sum(run.points for run in summary.runs)
    console.print(f"[bold]{_plain(summary.logdir)}[/bold]: {_size(summary.total_bytes)}, "
                  f"{len(summary.groups)} groups, {len(summary.runs)} runs, "
                  f"{len({t.tag for t in summary.tags})} tags, {points:,} points")

    groups = Table(title="groups")
    for column in ("group", "runs", "clients", "tags", "points", "last step", "events size"):
        groups.add_column(column, justify="left" if column == "group" else "right")
    for group in summary.groups:
        runs = [r for r in summary.runs if r.group == group]
        tags = {t.tag for t in summary.tags if t.run.split("/", 1)[0] == group}
        clients = [c for c in summary.clients if c.split("/", 1)[0] == group]
        last = max((r.last_step for r in runs if r.last_step is not None), default=None)
        groups.add_row(_literal(group), str(len(runs)), str(len(clients)), str(len(tags)),
                       f"{sum(r.points for r in runs):,}", "" if last is None else str(last),
                       _size(sum(r.bytes for r in runs)))
    console.print(groups)

    runs_table = Table(title="runs (one per client, or one per normal group)")
    for column in ("run", "tags", "points", "last step", "event files", "size"):
        runs_table.add_column(column, justify="left" if column == "run" else "right")
    show(runs_table, [
        (r.run, str(r.tags), f"{r.points:,}", "" if r.last_step is None else str(r.last_step),
         str(r.event_files), _size(r.bytes))
        for r in summary.runs
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
        for tag, entries in sorted(by_tag.items())
    ], "tags")

    if summary.artifacts:
        artifacts = Table(title="artifacts")
        artifacts.add_column("path")
        artifacts.add_column("size", justify="right")
        show(artifacts, [(a.path, _size(a.size)) for a in summary.artifacts], "artifacts")
    if summary.log_files:
        logs = Table(title="text logs")
        logs.add_column("file")
        logs.add_column("size", justify="right")
        show(logs, [(f.path, _size(f.bytes)) for f in summary.log_files], "log files")
    if summary.params:
        console.print(f"params: {_plain(', '.join(summary.params))}  (rayplex.read_params)")
    return 0


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


def _export(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None:
        suffix = os.path.splitext(args.output or "")[1].lstrip(".").lower()
        fmt = suffix if suffix in _FORMATS else "csv"
    if fmt == "parquet" and not args.output:
        raise ValueError("--format parquet writes a file: give -o FILE")
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
    tags = sorted(curves)
    if len(tags) > _MAX_PLOTS:
        print(f"rayplex plot: {len(tags)} tags match; drawing the first {_MAX_PLOTS} "
              f"(narrow --tag to choose)", file=sys.stderr)
        tags = tags[:_MAX_PLOTS]
    ncols = min(3, len(tags))
    nrows = math.ceil(len(tags) / ncols)
    figure = Figure(figsize=(5.5 * ncols, 3.8 * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    for i, tag in enumerate(tags, start=1):
        axes = figure.add_subplot(nrows, ncols, i)
        for run, (steps, values) in sorted(curves[tag].items()):
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


def _tail(args: argparse.Namespace) -> int:
    from rayplex import textlog
    from rayplex.read import check_logdir
    from rayplex.terminal import escape_controls
    from rayplex.tfrecord import NotRegularFileError, open_regular

    path = check_logdir(args.logdir) / "logs" / "all.log"
    if args.level is not None:
        textlog.parse_level(args.level)  # a bad level is an error before anything prints
    tty = sys.stdout.isatty()
    out = sys.stdout

    def display(line: str) -> str:
        # On a terminal, log text must not drive it: escape controls, then add our own colours.
        return textlog.colorize(escape_controls(line)) if tty else line

    try:
        if args.follow:
            if path.exists() and not path.is_file():
                raise NotRegularFileError(f"{str(path)!r} is not a regular file")
            lines = textlog.filter_lines(_follow(path), client=args.client, level=args.level)
            for line in lines:
                out.write(display(line))
                out.flush()
        else:
            try:
                binary = open_regular(path)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"no text logs in {args.logdir}: {path} does not exist") from None
            with io.TextIOWrapper(binary, encoding="utf-8", errors="replace") as file:
                for line in textlog.filter_lines(file, client=args.client, level=args.level):
                    out.write(display(line))
    except KeyboardInterrupt:
        return 0
    return 0


def _follow(path: os.PathLike[str]) -> Any:
    """``textlog.follow`` (a seam for tests, which need to stop it)."""
    from rayplex.textlog import follow

    return follow(path)


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayplex", description="Distributed logging on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="log from ~50 Ray tasks and actors into one logdir")
    demo.add_argument("--logdir", default="./rayplex_logs/demo", help="where to write")
    demo.add_argument("--workers", type=int, default=40, help="agent tasks (indexed group)")
    demo.add_argument("--evaluators", type=int, default=8, help="evaluator actors (combined group)")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to log")
    demo.add_argument("--address", default=None, help="join an existing Ray cluster")
    demo.add_argument("--board", action="store_true", help="then serve the logdir with TensorBoard")
    demo.add_argument("--port", type=int, default=6006, help="TensorBoard's port with --board")
    demo.add_argument("--host", default="127.0.0.1", help="TensorBoard's address with --board")
    demo.set_defaults(func=_demo)

    board = commands.add_parser(
        "board", help="serve a logdir with TensorBoard",
        description="Start TensorBoard on LOGDIR/tensorboard, print its URL and wait (Ctrl-C stops).",
    )
    _add_logdir(board)
    board.add_argument("--port", type=int, default=6006, help="port to serve on; 0 picks a free one")
    board.add_argument("--host", default="127.0.0.1",
                       help="address to bind; 0.0.0.0 serves other machines too")
    board.set_defaults(func=_board)

    ls = commands.add_parser(
        "ls", help="an experiment at a glance",
        description="Groups, runs, tags (last step, points), artifacts, text logs and sizes.",
    )
    _add_logdir(ls)
    ls.add_argument("--all", action="store_true", help=f"show every row (default: {_ROWS_SHOWN} per table)")
    ls.set_defaults(func=_ls)

    export = commands.add_parser(
        "export", help="scalars to CSV, JSON or Parquet",
        description="Write the columns run, tag, step, wall_time, value to stdout (csv, json) or "
                    "to -o FILE.",
    )
    _add_logdir(export)
    export.add_argument("--format", choices=_FORMATS,
                        help="output format (default: from -o's suffix, else csv)")
    _add_selection(export)
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(func=_export)

    plot = commands.add_parser(
        "plot", help="draw scalar curves into a PNG",
        description="One chart per matching tag, one line per run.",
    )
    _add_logdir(plot)
    _add_selection(plot, tag_required=True)
    plot.add_argument("-o", "--output", metavar="FILE", default="scalars.png",
                      help="image file (default: scalars.png)")
    plot.add_argument("--dpi", type=int, default=100, help="resolution (default: 100)")
    plot.set_defaults(func=_plot)

    tail = commands.add_parser(
        "tail", help="print the text logs, filtered",
        description="Print LOGDIR/logs/all.log, keeping the records of one client or group and/or "
                    "those at or above a level.",
    )
    _add_logdir(tail)
    tail.add_argument("--client", metavar="ID", help="a client 'agent/3' or a whole group 'agent'")
    tail.add_argument("--level", metavar="LEVEL", help="minimum level: WARNING, INFO5, 15, ...")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    tail.set_defaults(func=_tail)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
