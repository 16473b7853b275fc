"""The viewer's JSON answers, computed from the store: plain functions and one cache, no server.

Every answer is built from :func:`rayplex.read_series` and :func:`rayplex.sql` with fixed
queries; nothing from a request becomes SQL or a path. A request's tag and runs must be ones the
store lists (and pass :func:`rayplex.rules.validate_tag`), its steps :func:`rayplex.rules.check_step`;
anything else is a :class:`BadRequest`. Run names go to :func:`rayplex.read_series` as glob
patterns that match only themselves (:func:`literal_pattern`).

Example:
    >>> source = Source("/tmp/exp1")  # doctest: +SKIP
    >>> source.series({"tag": "loss", "runs": ["agent/2"], "buckets": 400})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayplex.config import (  # the viewer's tunables live with every other
    CHART_BUCKETS,
    COARSE_BUCKETS,
    HIGHLIGHT_MAX,
    LINE_RUNS_MAX,
    LIVE_WITHIN_S,
    LOG_LINES_MAX,
    LOG_TAIL_BYTES,
    MAX_BUCKETS,
    PARAM_TAGS_MAX,
    READS_AT_ONCE,
    REFRESH_EVERY_S,
    WALL_EVERY_S,
    ZOOM_COARSE_BUCKETS,
)
from rayplex.rules import check_step, natural_key, validate_tag
from rayplex.store.format import LEVELS

__all__ = [
    "BAND_ABOVE",
    "CHART_BUCKETS",
    "HIGHLIGHT_MAX",
    "BadRequest",
    "Source",
    "band_answer",
    "alerts_answer",
    "catalog",
    "coarse_first",
    "literal_pattern",
    "log_tail",
    "params_answer",
    "robust_range",
    "series_answer",
    "summaries",
    "summary_answer",
    "wall_times",
    "whole_buckets",
    "with_states",
]

BAND_ABOVE = 50
"""More selected runs than this are drawn as a band (min-max envelope and median)."""

ANSWERS_KEPT = 256
"""Series answers a :class:`Source` keeps (of the current store version)."""
ROBUST_QUANTILE = 0.01
ROBUST_PAD = 0.1


class BadRequest(ValueError):
    """A request the viewer refuses (unknown run or tag, malformed steps or buckets): HTTP 400."""


# ----------------------------------------------------------------------------- validation


def literal_pattern(name: str) -> str:
    """A glob pattern that matches exactly ``name`` (``*``, ``?`` and ``[`` made literal).

    Example:
        >>> literal_pattern("agent[1]*")
        'agent[[]1][*]'
        >>> import fnmatch
        >>> fnmatch.fnmatchcase("agent[1]*", literal_pattern("agent[1]*"))
        True
    """
    return re.sub(r"([*?\[])", r"[\1]", name)


def _tag(value: Any, known: Iterable[str]) -> str:
    try:
        tag = validate_tag(value)
    except (TypeError, ValueError) as exc:
        raise BadRequest(str(exc)) from None
    if tag not in known:
        raise BadRequest(f"no tag {tag!r} in this logdir")
    return tag


def _runs(value: Any, known: Mapping[str, Any]) -> list[str] | None:
    """``None`` (every run) or the requested runs, each one the store lists."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise BadRequest("runs must be null (all) or a list of run names")
    unknown = [r for r in value if r not in known]
    if unknown:
        raise BadRequest(f"no run {unknown[0]!r} in this logdir")
    return list(dict.fromkeys(value))


def _steps(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise BadRequest("steps must be null or [lo, hi]")
    try:
        lo, hi = check_step(value[0]), check_step(value[1])
    except (TypeError, ValueError) as exc:
        raise BadRequest(str(exc)) from None
    if lo > hi:
        raise BadRequest(f"steps must have lo <= hi, got [{lo}, {hi}]")
    return lo, hi


def _buckets(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BUCKETS:
        raise BadRequest(f"buckets must be an int in 1..{MAX_BUCKETS}, got {value!r}")
    return value


# ----------------------------------------------------------------------------- numbers


def _floats(values: Any) -> list[float | None]:
    """JSON numbers: NaN and infinities become null (JSON has none)."""
    array = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(array)
    if finite.all():  # the common case, vectorised: a chart's answer has 10^5 numbers
        return array.tolist()  # type: ignore[no-any-return]
    out = array.astype(object)
    out[~finite] = None
    return out.tolist()  # type: ignore[no-any-return]


def _ints(values: Any) -> list[int]:
    return np.asarray(values, dtype=np.int64).tolist()  # type: ignore[no-any-return]


def robust_range(mins: Sequence[float] | np.ndarray[Any, Any],
                 maxs: Sequence[float] | np.ndarray[Any, Any]) -> dict[str, Any]:
    """The y-range a chart shows by default, and the full one.

    ``robust`` spans the 1st percentile of the buckets' minima to the 99th of their maxima,
    widened by 10 % of that span on each side and cut to the full range: a lone spike falls
    outside it (and is marked at the chart's edge), a family of curves stays whole.

    Example:
        >>> r = robust_range([0.0] * 200, [1.0] * 199 + [1000.0])
        >>> r["full"], r["robust"], r["clipped"]
        ([0.0, 1000.0], [0.0, 1.1], True)
        >>> robust_range([0.0, 1.0], [1.0, 2.0])["clipped"]
        False
    """
    lo_all = np.asarray(mins, dtype=np.float64)
    hi_all = np.asarray(maxs, dtype=np.float64)
    lo_all = lo_all[np.isfinite(lo_all)]
    hi_all = hi_all[np.isfinite(hi_all)]
    if not len(lo_all) or not len(hi_all):
        return {"full": None, "robust": None, "clipped": False}
    full = [float(lo_all.min()), float(hi_all.max())]
    lo_q = float(np.quantile(lo_all, ROBUST_QUANTILE))
    hi_q = float(np.quantile(hi_all, 1 - ROBUST_QUANTILE))
    pad = (hi_q - lo_q) * ROBUST_PAD or abs(hi_q) * ROBUST_PAD or 1.0
    robust = [max(full[0], lo_q - pad), min(full[1], hi_q + pad)]
    return {"full": full, "robust": robust, "clipped": robust != full}


# ----------------------------------------------------------------------------- answers


def catalog(logdir: str | os.PathLike[str], *, refresh: bool = True) -> dict[str, Any]:
    """Every run (last step, last wall time, points, state) and every tag (runs, step span).
    Runs and tags in natural order.

    Read from the store's catalogues when the store is current (:func:`rayplex.store.scan.
    stored_tags`: no point is read), else from two fixed :func:`rayplex.sql` queries. A run's
    state is :func:`run_states`'s."""
    from rayplex.store import sql
    from rayplex.store.scan import stored_tags

    if refresh:
        from rayplex.store import index

        index(logdir)
    stats = stored_tags(logdir)
    run_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    if stats is not None:
        by_run: dict[str, dict[str, Any]] = {}
        by_tag: dict[str, dict[str, Any]] = {}
        for (run, tag), stat in stats.items():
            if stat.kind != "scalar":
                continue
            r = by_run.setdefault(run, {"run": run, "group": run.split("/")[0], "last_step": 0,
                                        "last_wall_time": None, "points": 0})
            r["last_step"] = max(r["last_step"], stat.last_step) if r["points"] else \
                stat.last_step
            wall = _floats([stat.last_wall_time])[0]
            if wall is not None and (r["last_wall_time"] is None or wall > r["last_wall_time"]):
                r["last_wall_time"] = wall
            r["points"] += stat.points
            t = by_tag.setdefault(tag, {"tag": tag, "runs": 0, "first_step": stat.first_step,
                                        "last_step": stat.last_step})
            t["runs"] += 1
            t["first_step"] = min(t["first_step"], stat.first_step)
            t["last_step"] = max(t["last_step"], stat.last_step)
        run_rows, tag_rows = list(by_run.values()), list(by_tag.values())
    else:
        runs = sql(logdir, 'SELECT run, "group", last_step, last_wall_time, points FROM runs',
                   refresh=False)
        tags = sql(logdir, "SELECT tag, count(DISTINCT run) AS runs, min(step) AS first_step, "
                           "max(step) AS last_step FROM scalars GROUP BY tag", refresh=False)
        run_rows = [{
            "run": str(r.run), "group": str(r.group), "last_step": int(r.last_step),
            "last_wall_time": _floats([r.last_wall_time])[0], "points": int(r.points),
        } for r in runs.itertuples(index=False)]
        tag_rows = [{"tag": str(t.tag), "runs": int(t.runs), "first_step": int(t.first_step),
                     "last_step": int(t.last_step)} for t in tags.itertuples(index=False)]
    run_rows.sort(key=lambda r: natural_key(str(r["run"])))
    tag_rows.sort(key=lambda t: natural_key(str(t["tag"])))
    with_states(logdir, run_rows)
    return {"runs": run_rows, "tags": tag_rows, "summaries": summaries(tag_rows, stats)}


SUMMARY_STATS = ("mean", "std", "min", "max")
"""The ``store_metrics`` summary's statistics the page draws as a band (``<key>/<stat>`` tags
of the ``<group>/summary`` run)."""


def summaries(tag_rows: Sequence[Mapping[str, Any]],
              stats: Mapping[tuple[str, str], Any] | None = None) -> list[dict[str, Any]]:
    """The ``store_metrics`` keys that can be drawn as mean ± std with min/max: every ``key``
    whose ``key/mean`` and ``key/std`` tags exist (``key/min``, ``key/max`` when they do), with
    the summary runs that have them when the store's catalogue tells (else ``None``: any run).

    Example:
        >>> summaries([{"tag": "reward/mean"}, {"tag": "reward/std"}, {"tag": "loss"}])
        [{'key': 'reward', 'stats': ['mean', 'std'], 'runs': None}]
    """
    tags = {str(t["tag"]) for t in tag_rows}
    out = []
    for tag in sorted(tags, key=natural_key):
        key, _, stat = tag.rpartition("/")
        if stat != "mean" or not key or f"{key}/std" not in tags:
            continue
        runs = None
        if stats is not None:
            runs = sorted({run for run, t in stats if t == tag and run.endswith("/summary")},
                          key=natural_key)
        out.append({"key": key, "stats": [s for s in SUMMARY_STATS if f"{key}/{s}" in tags],
                    "runs": runs})
    return out


def _run_of(client: str, runs: Mapping[str, Any] | Iterable[str]) -> str | None:
    """The run that shows a client's curves: its own (``agent/3``), else its group's
    (``learner`` for ``learner/main``); None if neither exists."""
    if client in runs:
        return client
    group = client.split("/")[0]
    return group if group in runs else None


def _alert_json(alert: Any, runs: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    def number(value: float | None) -> float | str | None:
        return value if value is None or math.isfinite(value) else str(value)  # "nan", "inf"

    return {"rule": alert.rule, "group": alert.group, "client": alert.client,
            "run": _run_of(alert.client, runs) if alert.client else None,
            "node": alert.node, "pid": alert.pid, "step": alert.step,
            "value": number(alert.value), "median": number(alert.median),
            "wall_time": number(alert.wall_time), "message": alert.message}


def with_states(logdir: str | os.PathLike[str], run_rows: list[dict[str, Any]],
                now: float | None = None) -> None:
    """Set each run row's ``state`` and ``alert`` (its latest alert or None).

    A rayplex logdir's runs take :func:`rayplex.read.client_states` (``running``, ``finished``,
    ``silent``, ``crashed``; a group's run such as ``learner`` the state of its clients'
    latest alert). A plain TensorBoard logdir has no hub: a run is ``running`` when its last
    point is less than :data:`LIVE_WITHIN_S` old, else ``finished``.
    """
    from rayplex.read import client_states
    from rayplex.store.format import Layout

    names = [str(r["run"]) for r in run_rows]
    if not Layout.of(logdir).rayplex:
        now = time.time() if now is None else now
        for r in run_rows:
            wall = r.get("last_wall_time")
            r["state"] = "running" if wall is not None and now - wall < LIVE_WITHIN_S else \
                "finished"
            r["alert"] = None
        return
    from rayplex.watch import alerts

    latest = {}
    for alert in alerts(logdir):  # oldest first: the last wins
        run = _run_of(alert.client, set(names)) if alert.client else None
        if run is not None:
            latest[run] = alert.client
    states = {s.client: s for s in client_states(logdir, names + sorted(set(latest.values())))}
    for r, name in zip(run_rows, names, strict=True):
        pick = states[latest.get(name, name)]  # a group's run: its latest alerting client
        r["state"] = pick.state
        r["alert"] = _alert_json(pick.last_alert, set(names)) if pick.last_alert else None


WALL_ANCHORS = 128
"""Anchors per run of the step -> wall-time map (:func:`wall_times`)."""


def wall_times(logdir: str | os.PathLike[str], last_step: int) -> dict[str, Any]:
    """Each run's step -> wall-time map, for an x-axis in wall or relative time: per run, the
    first and last point (step, wall time) of each of :data:`WALL_ANCHORS` equal step spans
    (one fixed :func:`rayplex.sql` query over every point: read once per store version). The
    page interpolates between anchors, so a time is exact at an anchor and linear in between
    (a stretch of at most ``last_step / WALL_ANCHORS`` steps).

    Returns ``{"runs": {run: {"step": [...], "wall": [...]}}, "width": steps per span}``.
    """
    from rayplex.store import sql

    width = max(1, (int(last_step) + 1) // WALL_ANCHORS + 1)  # an int from the store, not a request
    frame = sql(logdir, "SELECT run, min(step) AS s0, arg_min(wall_time, step) AS w0, "
                        "max(step) AS s1, arg_max(wall_time, step) AS w1 FROM scalars "
                        f"GROUP BY run, step // {width:d} ORDER BY run, s0", refresh=False)
    runs: dict[str, dict[str, list[Any]]] = {}
    for run, s0, w0, s1, w1 in frame.itertuples(index=False):
        entry = runs.setdefault(str(run), {"step": [], "wall": []})
        for step, wall in ((s0, w0), (s1, w1)) if s1 != s0 else ((s0, w0),):
            if math.isfinite(wall):
                entry["step"].append(int(step))
                entry["wall"].append(float(wall))
    return {"runs": runs, "width": width}


def alerts_answer(logdir: str | os.PathLike[str], runs: Mapping[str, Any], *,
                  limit: int = 500) -> dict[str, Any]:
    """The experiment's alerts (:func:`rayplex.alerts`), newest first, at most ``limit``, each
    with the run that shows its client (``run``: None when none does); ``total`` counts all."""
    from rayplex.watch import alerts

    every = alerts(logdir)
    return {"total": len(every),
            "alerts": [_alert_json(a, runs) for a in reversed(every[-limit:])]}


@dataclass
class _Rows:
    """One tag's rows of :func:`rayplex.read_series` as numpy columns; ``run`` holds indices
    into ``names``; ``width`` is the output bucket width read_series used (0: one bucket)."""

    names: list[str]
    run: np.ndarray[Any, Any]
    cols: dict[str, np.ndarray[Any, Any]]
    width: int


def whole_buckets(steps: tuple[int, int] | None, buckets: int) -> tuple[int, int] | None:
    """A zoom's ``steps`` widened to the edges of the output buckets
    :func:`rayplex.read_series` cuts them into (by :func:`rayplex.store.pyramid.plan`).

    Its ends are then whole buckets of the pyramid level it reads: a read decodes that level's
    rows alone, not the finer levels and raw points of every run that a ragged end needs (a
    finer level's row groups hold whole series). The answer stays exact, each bucket holding
    every point of its steps; the page's chart shows the zoom's steps and clips the rest.

    Example:
        >>> whole_buckets((1001, 2998), 100), whole_buckets((1001, 1100), 550)
        ((992, 3007), (1001, 1100))
    """
    from rayplex.store.pyramid import plan

    if steps is None:
        return None
    lo, hi = steps
    for _ in range(3):  # a wider range may get wider buckets: snap to those
        query = plan(lo, hi, buckets)
        if query.level == 0 or query.width == 0:
            break
        wider = (max(lo - lo % query.width, -(2**63)),
                 min(hi + (-(hi + 1)) % query.width, 2**63 - 1))
        if wider == (lo, hi):
            break
        lo, hi = wider
    return lo, hi


def coarse_first(lo: int, hi: int, coarse: int) -> bool:
    """Whether a chart of steps ``lo..hi`` is first asked at ``coarse`` buckets (then at the
    full width): when those buckets are whole pyramid rows (:func:`rayplex.store.pyramid.plan`
    picks a level above the raw points), so the first stage reads few rows. The page applies the
    same rule (``pyramid_base`` in the catalog).

    Example:
        >>> coarse_first(0, 4999, 64), coarse_first(1000, 1100, 128)
        (True, False)
    """
    from rayplex.store.pyramid import plan

    return plan(lo, hi, coarse).level > 0


def _read(logdir: str | os.PathLike[str], tag: str, runs: list[str] | None, all_runs: int,
          buckets: int, steps: tuple[int, int] | None) -> _Rows:
    """The buckets of :func:`rayplex.read_series` of ``runs`` (None: all) as numpy columns,
    the zoom read in :func:`whole_buckets`; a large subset is read whole and filtered (one
    glob pattern per run would cost more than the rows)."""
    from rayplex.store.query import series_buckets

    few = runs is not None and len(runs) <= LINE_RUNS_MAX and len(runs) < all_runs
    answer = series_buckets(logdir, literal_pattern(tag),
                            runs=[literal_pattern(r) for r in runs] if few and runs else None,
                            buckets=buckets, steps=whole_buckets(steps, buckets), refresh=False)
    rows, keys = answer.rows, answer.keys
    keep = np.ones(len(rows), bool)
    if runs is not None and not few:
        wanted = set(runs)
        keep = np.array([k[0] in wanted for k in keys] or [False])[rows.series]
    elif runs == []:
        keep = np.zeros(len(rows), bool)
    series = rows.series[keep]
    used = np.unique(series)
    cols = {"step_lo": rows.first_step, "step_hi": rows.last_step, "first": rows.first,
            "last": rows.last, "min": rows.min, "max": rows.max, "count": rows.count}
    return _Rows([keys[i][0] for i in used.tolist()], np.searchsorted(used, series),
                 {name: col[keep] for name, col in cols.items()},
                 answer.width if len(rows) else 0)


def _since(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return check_step(value)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"since: {exc}") from None


def _from_bucket(rows: _Rows, since: int | None) -> _Rows:
    """Only the output buckets from the one holding step ``since`` on (a live page's update:
    what it has not seen, and the last bucket it saw, which may have grown)."""
    if since is None or not rows.width:
        return rows
    keep = rows.cols["step_lo"] // rows.width >= since // rows.width
    return _Rows(rows.names, rows.run[keep], {k: v[keep] for k, v in rows.cols.items()},
                 rows.width)


def _lines(rows: _Rows, only: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Each run's buckets as JSON columns (``only``: just these runs), in natural order."""
    keep = None if only is None else [i for i, name in enumerate(rows.names) if name in set(only)]
    out = []
    order = np.argsort(rows.run, kind="stable")  # rows come by run already; keep step order
    if keep is not None:
        order = order[np.isin(rows.run[order], keep)]
    run = rows.run[order]
    cuts = np.flatnonzero(np.diff(run)) + 1
    for part in np.split(order, cuts) if len(order) else []:
        c = {name: col[part] for name, col in rows.cols.items()}
        out.append({"run": rows.names[int(rows.run[part[0]])],
                    "step_lo": _ints(c["step_lo"]), "step_hi": _ints(c["step_hi"]),
                    "first": _floats(c["first"]), "last": _floats(c["last"]),
                    "min": _floats(c["min"]), "max": _floats(c["max"]),
                    "count": _ints(c["count"])})
    out.sort(key=lambda r: natural_key(str(r["run"])))
    return out


def series_answer(logdir: str | os.PathLike[str], known: Mapping[str, Any],
                  request: Mapping[str, Any]) -> dict[str, Any]:
    """Each selected run's M4 buckets of one tag (``first, last, min, max, count`` with
    ``step_lo, step_hi``), and the chart's y-ranges (:func:`robust_range`).

    ``request``: ``{"tag": str, "runs": [names] | null, "buckets": int, "steps": [lo, hi] |
    null, "since": step | null}``; ``known``: the catalog's ``{"runs": {name: ...}, "tags":
    {tag: ...}}``. With ``since``, only the buckets from the one holding that step on are sent
    (the y-ranges still cover all): a live page fetches what it has not seen.
    """
    tag = _tag(request.get("tag"), known["tags"])
    runs = _runs(request.get("runs"), known["runs"])
    if (len(known["runs"]) if runs is None else len(runs)) > LINE_RUNS_MAX:
        raise BadRequest(f"more than {LINE_RUNS_MAX} runs: ask for a band")
    buckets = _buckets(request.get("buckets", 1000))
    steps = _steps(request.get("steps"))
    since = _since(request.get("since"))
    rows = _read(logdir, tag, runs, len(known["runs"]), buckets, steps)
    y_range = robust_range(rows.cols["min"], rows.cols["max"])
    rows = _from_bucket(rows, since)
    out = _lines(rows)
    return {"tag": tag, "mode": "lines", "steps": list(steps) if steps else None,
            "buckets": buckets, "width": rows.width, "runs": out, "range": y_range,
            "since": since if since is not None and rows.width else None}


def band_answer(logdir: str | os.PathLike[str], known: Mapping[str, Any],
                request: Mapping[str, Any]) -> dict[str, Any]:
    """The selected runs of one tag as a band: per output bucket (the buckets
    :func:`rayplex.read_series` aligns across runs), the min of the runs' minima, the max of
    their maxima (the envelope: every spike stays in it), the median of their last values, and
    how many runs have points there. Same request as :func:`series_answer`, plus
    ``"highlight": [names]`` (at most :data:`HIGHLIGHT_MAX`): ``lines`` holds the buckets of
    those runs and of the extremes (the members with the highest and the lowest last value),
    read with the band — the page draws them over it without asking again."""
    tag = _tag(request.get("tag"), known["tags"])
    runs = _runs(request.get("runs"), known["runs"])
    highlight = _runs(request.get("highlight") or [], known["runs"]) or []
    if len(highlight) > HIGHLIGHT_MAX:
        raise BadRequest(f"at most {HIGHLIGHT_MAX} runs can be highlighted")
    buckets = _buckets(request.get("buckets", 1000))
    steps = _steps(request.get("steps"))
    since = _since(request.get("since"))
    rows = _read(logdir, tag, runs, len(known["runs"]), buckets, steps)
    answer: dict[str, Any] = {"tag": tag, "mode": "band", "steps": list(steps) if steps else None,
                              "buckets": buckets, "width": rows.width,
                              "members": len(set(rows.run.tolist())),
                              "range": robust_range(rows.cols["min"], rows.cols["max"]),
                              "since": since if since is not None and rows.width else None}
    rows = _from_bucket(rows, since)
    c = rows.cols
    slot = c["step_lo"] // rows.width if rows.width else np.zeros(len(rows.run), np.int64)
    last = np.where(np.isnan(c["last"]), np.inf, c["last"])
    order = _by_slot_then(slot, last)
    slot = slot[order]
    starts = np.flatnonzero(np.r_[True, np.diff(slot) != 0]) if len(slot) else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, len(slot)])
    if len(slot):
        sorted_last = c["last"][order]
        median = (sorted_last[starts + (sizes - 1) // 2] + sorted_last[starts + sizes // 2]) / 2
        # The extremes: the members with the highest and the lowest last value in the last
        # bucket (the page draws them, and the ones the user pinned, over the band).
        lasts = c["last"][order][starts[-1]:]
        members = rows.run[order][starts[-1]:]
        finite = np.isfinite(lasts)
        if finite.any():
            answer["extremes"] = {
                "top": rows.names[int(members[finite][np.argmax(lasts[finite])])],
                "bottom": rows.names[int(members[finite][np.argmin(lasts[finite])])]}
        answer.update(
            x=_ints(np.minimum.reduceat(c["step_lo"][order], starts)),
            step_hi=_ints(np.maximum.reduceat(c["step_hi"][order], starts)),
            min=_floats(np.fmin.reduceat(c["min"][order], starts)),
            max=_floats(np.fmax.reduceat(c["max"][order], starts)),
            median=_floats(median), runs=_ints(sizes))
    else:
        answer.update(x=[], step_hi=[], min=[], max=[], median=[], runs=[])
    answer.setdefault("extremes", None)
    on_top = list(dict.fromkeys([*highlight, *(answer["extremes"] or {}).values()]))
    answer["lines"] = _lines(rows, on_top[:HIGHLIGHT_MAX])
    return answer


def _by_slot_then(slot: np.ndarray[Any, Any], value: np.ndarray[Any, Any]
                  ) -> np.ndarray[Any, Any]:
    """``np.lexsort((value, slot))``: two stable sorts, the one by slot a radix sort when the
    slots fit 16 bits (five times faster than lexsort on a thousand runs' buckets)."""
    by_value = np.argsort(value, kind="stable")
    keys = slot[by_value]
    if len(keys) and int(keys.max()) - int(keys.min()) < 1 << 16:
        keys = (keys - keys.min()).astype(np.uint16)
    out: np.ndarray[Any, Any] = by_value[np.argsort(keys, kind="stable")]
    return out


def summary_answer(logdir: str | os.PathLike[str], known: Mapping[str, Any],
                   request: Mapping[str, Any]) -> dict[str, Any]:
    """A ``store_metrics`` summary as a band: per output bucket of the summary run's
    ``key/mean``, ``key/std``, ``key/min`` and ``key/max`` tags (one :func:`rayplex.read_series`
    call: their buckets align), the last mean and std, the min of the minima and the max of the
    maxima. ``request``: ``{"run": summary run, "key": str, "buckets": int, "steps": [lo, hi] |
    null}``; the tags must be ones the store lists."""
    from rayplex.store import read_series

    run = request.get("run")
    if not isinstance(run, str) or run not in known["runs"]:
        raise BadRequest(f"no run {run!r} in this logdir")
    key = request.get("key")
    if not isinstance(key, str):
        raise BadRequest("key must be a string")
    tags = {stat: _tag(f"{key}/{stat}", known["tags"]) for stat in SUMMARY_STATS
            if stat in ("mean", "std") or f"{key}/{stat}" in known["tags"]}
    buckets = _buckets(request.get("buckets", 1000))
    steps = _steps(request.get("steps"))
    table = read_series(logdir, [literal_pattern(t) for t in tags.values()],
                        runs=literal_pattern(run), buckets=buckets, steps=steps, refresh=False,
                        as_arrow=True)
    cols = {name: table[name].to_numpy() for name in ("tag", "step_lo", "step_hi", "last",
                                                      "min", "max")}
    slots = np.unique(cols["step_lo"])
    answer: dict[str, Any] = {"run": run, "key": key, "mode": "summary", "buckets": buckets,
                              "steps": list(steps) if steps else None, "x": _ints(slots)}
    for stat, tag in tags.items():
        mine = cols["tag"] == tag
        column = {"min": "min", "max": "max"}.get(stat, "last")
        values = np.full(len(slots), np.nan)
        values[np.searchsorted(slots, cols["step_lo"][mine])] = cols[column][mine]
        answer[stat] = _floats(values)
    mean = np.asarray([np.nan if v is None else v for v in answer["mean"]])
    std = np.asarray([np.nan if v is None else v for v in answer["std"]])
    lo = np.fmin(mean - std, np.asarray([np.nan if v is None else v for v in
                                         answer.get("min", [None] * len(slots))], float))
    hi = np.fmax(mean + std, np.asarray([np.nan if v is None else v for v in
                                         answer.get("max", [None] * len(slots))], float))
    answer["range"] = robust_range(lo, hi)
    return answer




def params_answer(logdir: str | os.PathLike[str], known: Mapping[str, Any]) -> dict[str, Any]:
    """The sweep table: one row per run with its client's params (flattened, from the ``params``
    view of :func:`rayplex.sql`) and the last value of each tag (one-bucket
    :func:`rayplex.read_series`). A client's params go to its run: the run named like the client
    (``agent/3``), else its group's run (``learner`` for ``learner/main``)."""
    from rayplex.store import read_series, sql

    params = sql(logdir, "SELECT run AS client, key, value FROM params", refresh=False)
    runs = known["runs"]
    by_run: dict[str, dict[str, Any]] = {}
    keys: set[str] = set()
    for client, key, value in params.itertuples(index=False):
        client, key = str(client), str(key)
        run = client if client in runs or client.split("/")[0] not in runs else \
            client.split("/")[0]
        row = by_run.setdefault(run, {"run": run, "client": client, "params": {}, "last": {}})
        row["params"].setdefault(key, str(value))
        keys.add(key)
    tags = sorted(known["tags"], key=natural_key)[:PARAM_TAGS_MAX]
    if tags:
        last = read_series(logdir, [literal_pattern(t) for t in tags], buckets=1, refresh=False,
                           as_arrow=True)
        for run, tag, value in zip(last["run"].to_pylist(), last["tag"].to_pylist(),
                                   _floats(last["last"].to_numpy()), strict=True):
            by_run.setdefault(run, {"run": run, "client": None, "params": {}, "last": {}})
            by_run[run]["last"][tag] = value
    rows = sorted(by_run.values(), key=lambda r: natural_key(str(r["run"])))
    for row in rows:
        row["has_scalars"] = row["run"] in runs
    return {"keys": sorted(keys, key=natural_key), "tags": tags, "rows": rows}


def log_tail(logdir: str | os.PathLike[str], *, client: str | None = None,
             level: str | None = None, lines: int = 200) -> dict[str, Any]:
    """The last ``lines`` lines of ``logs/all.log`` (of one client or group, at or above a
    level), read from at most its last :data:`LOG_TAIL_BYTES`; ``{"lines": [...]}``."""
    from rayplex.layout import all_log_path
    from rayplex.rules import validate_group_name
    from rayplex.tail import filter_lines
    from rayplex.textlog import parse_level
    from rayplex.tfrecord import open_regular

    if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= LOG_LINES_MAX:
        raise BadRequest(f"lines must be an int in 1..{LOG_LINES_MAX}")
    try:
        if client:
            group, _, name = client.partition("/")
            validate_group_name(group, internal=True, what="group")
            if name:
                from rayplex.rules import validate_client_name

                validate_client_name(name, internal=True)
        if level:
            parse_level(level)
    except (TypeError, ValueError) as exc:
        raise BadRequest(str(exc)) from None
    path = Path(all_log_path(logdir))
    try:
        binary = open_regular(path)
    except FileNotFoundError:
        return {"lines": [], "exists": False}
    with binary:
        size = binary.seek(0, os.SEEK_END)
        binary.seek(max(0, size - LOG_TAIL_BYTES))
        text = binary.read().decode("utf-8", errors="replace")
    rows = text.splitlines()
    if size > LOG_TAIL_BYTES and rows:
        rows = rows[1:]  # the first line may be cut
    kept: deque[str] = deque(filter_lines(rows, client=client or None, level=level or None),
                             maxlen=lines)
    return {"lines": list(kept), "exists": True}


# ----------------------------------------------------------------------------- the cache


@dataclass
class _Known:
    version: str
    answer: dict[str, Any]
    runs: dict[str, Any]
    tags: dict[str, Any]


class Source:
    """One logdir as the server sees it: the catalog cached per store version, and a thread
    (:meth:`start`) that brings the store up to date every :data:`REFRESH_EVERY_S` (an
    incremental :func:`rayplex.index` when an event file grew), off the requests' path.
    Thread-safe."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.logdir = os.path.abspath(os.fspath(logdir))
        self._known: _Known | None = None
        self._known_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(READS_AT_ONCE, thread_name_prefix="rayplex-view-read")
        self._idle = threading.Condition()
        self._asking = 0
        self.warm_waits = 0
        self._params: tuple[str, dict[str, Any]] | None = None
        self._answers: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._answers_lock = threading.Lock()
        self._pending: dict[tuple[str, str], Future[dict[str, Any]]] = {}
        self.answers_hits = 0
        self._walls: tuple[str, float, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh_errors = 0

    def refresh(self) -> bool:
        """Index what the event files gained (if anything); True if it indexed."""
        from rayplex.store.format import Layout, Manifest
        from rayplex.store.indexer import index, pending_bytes

        with self._lock:
            layout = Layout.of(self.logdir)
            if layout.manifest.exists() and not pending_bytes(layout, Manifest.load(layout)):
                return False
            index(self.logdir)
            return True

    def start(self, every_s: float = REFRESH_EVERY_S) -> None:
        """Refresh in a daemon thread until :meth:`stop`."""
        def loop() -> None:
            try:
                self.warm()
            except Exception as exc:  # noqa: BLE001 - the page asks again and sees the error
                import warnings

                warnings.warn(f"rayplex view could not prepare the first charts of "
                              f"{self.logdir!r}: {exc}", RuntimeWarning, stacklevel=1)
            while not self._stop.wait(every_s):
                try:
                    self.refresh()
                except Exception as exc:  # noqa: BLE001 - e.g. a read-only logdir: show what is there
                    self.refresh_errors += 1
                    if self.refresh_errors == 1:
                        import warnings

                        warnings.warn(f"rayplex view cannot update the store of "
                                      f"{self.logdir!r}: {exc}", RuntimeWarning, stacklevel=1)

        self._thread = threading.Thread(target=loop, name="rayplex-view-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the refresh thread (waits for a refresh under way)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._readers.shutdown(wait=False, cancel_futures=True)

    def store_version(self) -> str:
        """The store's version: changes whenever the store commits (new points)."""
        from rayplex.store.format import Layout

        return Layout.of(self.logdir).version()

    def states_version(self) -> str:
        """What the runs' states are read from: ``alerts.jsonl``, the control file (the
        clients' pings) and whether a live hub holds the logdir; changes when one does."""
        from rayplex.layout import alerts_path, control_path
        from rayplex.owner import holder

        parts = []
        for path in (alerts_path(self.logdir), control_path(self.logdir)):
            try:
                st = os.stat(path)
                parts.append(f"{st.st_mtime_ns}-{st.st_size}")
            except OSError:
                parts.append("-")
        parts.append("live" if holder(self.logdir) is not None else "idle")
        return ".".join(parts)

    def version(self) -> str:
        """The page's version: the store's and the states'; a page that saw another one
        fetches the catalog (and the alerts) again."""
        return f"{self.store_version()}+{self.states_version()}"

    def known(self) -> _Known:
        """The catalog of the current version: the store's part computed once per store
        version, the runs' states once per :meth:`states_version`."""
        store_version, states_version = self.store_version(), self.states_version()
        version = f"{store_version}+{states_version}"
        known = self._known
        if known is not None and known.version == version:
            return known
        with self._known_lock:  # one reader computes it, the others (warm, a page) wait
            known = self._known
            if known is not None and known.version == version:
                return known
            return self._compute_known(known, store_version, version)

    def _compute_known(self, known: _Known | None, store_version: str, version: str) -> _Known:
        """The catalog of ``version`` from the last one (``known``): read again when the
        store changed, else only the runs' states."""
        if known is None or known.version.partition("+")[0] != store_version:
            answer = catalog(self.logdir, refresh=False)
        else:  # only the states changed: the store's part stays
            answer = {**known.answer, "runs": [dict(r) for r in known.answer["runs"]]}
            with_states(self.logdir, answer["runs"])
        answer["version"] = version
        answer["logdir"] = self.logdir
        answer["buckets"] = CHART_BUCKETS  # the page's, from here: one number in one place
        answer["coarse_buckets"] = COARSE_BUCKETS  # a chart's first stage
        answer["zoom_coarse_buckets"] = ZOOM_COARSE_BUCKETS  # a zoom's first stage
        answer["pyramid_base"] = 1 << LEVELS[0]  # coarse_first: a bucket this wide is a row
        answer["highlight_max"] = HIGHLIGHT_MAX
        answer["band_above"] = BAND_ABOVE
        known = _Known(version, answer, {r["run"]: r for r in answer["runs"]},
                       {t["tag"]: t for t in answer["tags"]})
        self._known = known
        return known

    def _context(self) -> dict[str, Any]:
        known = self.known()
        return {"runs": known.runs, "tags": known.tags}

    def series(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """:func:`series_answer` (:func:`band_answer` when ``request["band"]``,
        :func:`summary_answer` when ``request["summary"]``); an answer
        is kept per store version (the last :data:`ANSWERS_KEPT`), so asking again — another
        tab, a zoom reset, a chart scrolled back in — reads nothing, and a request asked while
        the same one is being answered (say, by :meth:`warm`) waits for that answer."""
        with self._idle:
            self._asking += 1
        try:
            return self._series(request)
        finally:
            with self._idle:
                self._asking -= 1
                self._idle.notify_all()

    def _series(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`series` (:meth:`warm` asks here: it is no page's request)."""
        if not isinstance(request, Mapping):
            raise BadRequest("the request body must be a JSON object")
        context = self._context()
        version = self.store_version()
        key = (version, _request_key(request))
        with self._answers_lock:
            cached = self._answers.get(key)
            if cached is not None:
                self._answers.move_to_end(key)
                self.answers_hits += 1
                return cached
            pending = self._pending.get(key)
            mine = pending is None
            if mine:
                pending = self._pending[key] = Future()
        assert pending is not None
        if not mine:
            self.answers_hits += 1
            return pending.result()
        try:
            make = summary_answer if request.get("summary") else \
                band_answer if request.get("band") else series_answer
            # On the reader threads only: few threads allocate the reads' large arrays (each
            # thread's malloc arena keeps what it freed; 40 request threads kept 1 GB).
            answer = self._readers.submit(make, self.logdir, context, request).result()
            answer["version"] = version
        except BaseException as exc:
            with self._answers_lock:
                del self._pending[key]
            pending.set_exception(exc)
            raise
        with self._answers_lock:
            del self._pending[key]
            self._answers[key] = answer
            for old in [k for k in self._answers if k[0] != version]:
                del self._answers[old]
            while len(self._answers) > ANSWERS_KEPT:
                self._answers.popitem(last=False)
        pending.set_result(answer)
        return answer

    def first_requests(self) -> list[dict[str, Any]]:
        """The requests a page opened on every run asks first, in its charts' order: each
        ``store_metrics`` summary, then each tag (a band when there are more than
        :data:`BAND_ABOVE` runs), no zoom; first every tag's coarse stage
        (:data:`COARSE_BUCKETS`, what the page paints first), then every chart at
        :data:`CHART_BUCKETS`."""
        answer = self.known().answer
        runs = [str(r["run"]) for r in answer["runs"]]
        summary_runs = [r for r in runs if r.endswith("/summary")]
        summaries: list[dict[str, Any]] = []
        for summary in answer["summaries"]:
            for run in summary["runs"] if summary["runs"] is not None else summary_runs:
                summaries.append({"summary": True, "run": run, "key": summary["key"],
                                  "buckets": CHART_BUCKETS, "steps": None})
        band = len(runs) > BAND_ABOVE
        tags = [{"tag": t["tag"], "runs": None, "steps": None, "band": band,
                 **({"highlight": []} if band else {})} for t in answer["tags"]
                if coarse_first(int(t["first_step"]), int(t["last_step"]), COARSE_BUCKETS)]
        return [*({**t, "buckets": COARSE_BUCKETS} for t in tags), *summaries,
                *({"tag": t["tag"], "runs": None, "buckets": CHART_BUCKETS, "steps": None,
                   "band": band, **({"highlight": []} if band else {})}
                  for t in answer["tags"])]

    def warm(self) -> int:
        """Answer :meth:`first_requests` ahead of the page (kept for the current store
        version): a page opened while the server reads finds its first chart under way or
        done. A read starts only while no page's request is under way (``warm_waits`` counts
        the waits). Returns how many were answered; stops early when :meth:`stop` is called."""
        done = 0
        for request in self.first_requests():
            with self._idle:  # a page's requests first: they wait for no read of ours
                while self._asking and not self._stop.is_set():
                    self.warm_waits += 1
                    self._idle.wait(1.0)
            if self._stop.is_set():
                break
            try:
                self._series(request)
                done += 1
            except (BadRequest, FileNotFoundError):  # e.g. a tag gone meanwhile
                continue
        return done

    def walltimes(self) -> dict[str, Any]:
        """:func:`wall_times` of this logdir: once per store version, and for a store that
        keeps changing at most every :data:`WALL_EVERY_S` (the page extends each run to its
        last point from the catalog)."""
        version = self.store_version()
        cached = self._walls
        if cached is None or (cached[0] != version and
                              time.monotonic() - cached[1] >= WALL_EVERY_S):
            last = max((int(r["last_step"]) for r in self.known().answer["runs"]), default=0)
            cached = (version, time.monotonic(), wall_times(self.logdir, last))
            self._walls = cached
        return cached[2]

    def alerts(self, limit: int = 500) -> dict[str, Any]:
        """:func:`alerts_answer` of this logdir."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise BadRequest("limit must be an int in 1..10000")
        return alerts_answer(self.logdir, self.known().runs, limit=limit)

    def params(self) -> dict[str, Any]:
        """:func:`params_answer` of the current store version (computed once per version)."""
        version = self.store_version()
        cached = self._params
        if cached is None or cached[0] != version:
            cached = (version, params_answer(self.logdir, self._context()))
            self._params = cached
        return cached[1]

    def logs(self, client: str | None, level: str | None, lines: int) -> dict[str, Any]:
        """:func:`log_tail` of this logdir."""
        return log_tail(self.logdir, client=client, level=level, lines=lines)


REQUEST_FIELDS: dict[str, Any] = {
    "tag": None, "runs": None, "buckets": 1000, "steps": None, "since": None, "band": False,
    "highlight": [], "summary": False, "run": None, "key": None}
"""A series request's fields and their defaults (:func:`_request_key`)."""


def _request_key(request: Mapping[str, Any]) -> str:
    """A request as the answers' cache key: its known fields, defaults filled in (a request
    that spells out a default is the same request); a field that is not plain JSON is a
    :class:`BadRequest`."""
    fields = {name: request.get(name, default) for name, default in REQUEST_FIELDS.items()}
    fields["band"], fields["summary"] = bool(fields["band"]), bool(fields["summary"])
    fields["highlight"] = fields["highlight"] or []
    try:
        return json.dumps(fields, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise BadRequest("the request body is not plain JSON") from None


def dumps(answer: Any) -> bytes:
    """Compact JSON (answers hold no NaN: :func:`_floats` made them null)."""
    return json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
