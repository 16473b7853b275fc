"""The ``rayplex`` command: ``rayplex demo`` runs the showcase; more commands grow here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


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
    console.print(f"logdir: {result.logdir}")
    console.print(f"view it: tensorboard --logdir {os.path.join(result.logdir, 'tensorboard')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayplex", description="Distributed logging on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="log from ~50 Ray tasks and actors into one logdir")
    demo.add_argument("--logdir", default="./rayplex_logs/demo", help="where to write")
    demo.add_argument("--workers", type=int, default=40, help="agent tasks (indexed group)")
    demo.add_argument("--evaluators", type=int, default=8, help="evaluator actors (combined group)")
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to log")
    demo.add_argument("--address", default=None, help="join an existing Ray cluster")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"rayplex {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
