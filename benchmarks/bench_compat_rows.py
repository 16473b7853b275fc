"""ML-Logger compat rows: a row appended with one blocking hub request per ``log()`` (what the
compat logger did before, and what a direct port of ML-Logger's per-row write does) vs the
compat logger's queued rows (appended by its own thread, batched per file).

Measured per variant, medians over ``--reps``: the caller's time per row, and rows/s end to
end until every row is in ``metrics.pkl`` at the hub.

    python benchmarks/bench_compat_rows.py                 # 2,000 rows, 3 repetitions
    python benchmarks/bench_compat_rows.py --rows 500 --reps 1
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _common as C


def _blocking(logger: Any, rows: int) -> tuple[float, float]:
    log = logger.rayplex_logger
    start = time.perf_counter()
    for step in range(rows):
        log.save_pkl({"step": step, "loss": float(step)}, "blocking.pkl", append=True)
    end = time.perf_counter()
    return end - start, end - start


def _queued(logger: Any, rows: int) -> tuple[float, float]:
    start = time.perf_counter()
    for step in range(1, rows + 1):
        logger.log(step=step, loss=float(step), silent=True)
    calls = time.perf_counter()
    logger.flush()
    return calls - start, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    C.start_ray(num_cpus=2)
    import rayplex
    from rayplex.compat.ml_logger import ML_Logger

    hub = rayplex.init(C.temp_logdir("compat-rows"), name="bench-compat-rows")
    samples: dict[str, list[tuple[float, float]]] = {"blocking": [], "queued": []}
    for rep in range(args.reps):
        for name, run in (("blocking", _blocking), ("queued", _queued)):
            logger = ML_Logger(f"bench/{name}-{rep}", root=hub.logdir)
            logger.log(step=0, loss=0.0, silent=True)
            logger.flush()  # connected and warm before the clock runs
            samples[name].append(run(logger, args.rows))
            if name == "queued":
                assert len(logger.load_pkl("metrics.pkl")) == args.rows + 1
    results = {name: {"us_per_row_call": C.median([c for c, _ in s]) / args.rows * 1e6,
                      "rows_per_s_end_to_end": args.rows / C.median([e for _, e in s])}
               for name, s in samples.items()}
    C.print_table(
        ["variant", "caller us/row", "rows/s end to end"],
        [(name, r["us_per_row_call"], r["rows_per_s_end_to_end"]) for name, r in results.items()],
        title=f"{args.rows} rows, medians of {args.reps}")
    b, q = results["blocking"], results["queued"]
    print(f"queued/blocking: caller {C.ratio(b['us_per_row_call'], q['us_per_row_call']):.0f}x "
          f"faster, end to end {C.ratio(q['rows_per_s_end_to_end'], b['rows_per_s_end_to_end']):.0f}x")
    C.write_json("compat_rows", args, results)
    rayplex.shutdown("bench-compat-rows")


if __name__ == "__main__":
    main()
