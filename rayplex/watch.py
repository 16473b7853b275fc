"""Watch rules: conditions the hub evaluates over what it writes, and the alerts they raise.

Rules are declared on the driver (``hub.watch(rayplex.watch.nan("loss"))``) and kept by the hub
as data (``.rayplex/watch.json``, JSON, never a pickle), so they survive a hub restart. An alert
goes to an ERROR line in ``logs/all.log``, to ``logdir/alerts.jsonl`` (once, through the hub's
journal), to :func:`alerts` and ``rayplex alerts LOGDIR``, and to the rule's webhooks.

Pure: no Ray, no I/O except :func:`alerts`, which reads ``alerts.jsonl``.

Example:
    >>> nan("loss").name
    'nan(loss)'
    >>> threshold("reward", below=-100, for_steps=3).name
    'threshold(reward, below=-100, for_steps=3)'
    >>> rule_from_json(rule_to_json(step_lag("agent", 50))) == step_lag("agent", 50)
    True
    >>> lagging({"agent/0": 100, "agent/1": 98, "agent/2": 20}, max_lag=50)
    {'agent/2': 98.0}
    >>> sorted(outliers({f"a/{i}": 1.0 + i / 100 for i in range(8)} | {"a/9": 50.0}, z=4.0))
    ['a/9']
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from rayplex.layout import alerts_path
from rayplex.rules import validate_group_name

__all__ = ["KINDS", "Alert", "Rule", "Webhook", "alert_from_json", "alert_to_json", "alerts",
           "crashed", "lagging", "nan", "outlier", "outliers", "rule_from_json", "rule_to_json",
           "silent", "step_lag", "tag_matches", "threshold", "webhook"]

KINDS = ("nan", "threshold", "silent", "step_lag", "outlier", "crashed")
"""The kinds of rule, in the order the README lists them."""

ACTIONS = (None, "stop")
"""What a rule may do besides alerting: ``"stop"`` signals the client (``log.ping()``)."""

MAD_SCALE = 1.4826
"""MAD × this estimates the standard deviation of normal data (a robust one)."""


@dataclass(frozen=True)
class Webhook:
    """Where an alert is POSTed as JSON in Slack's incoming-webhook shape (``{"text": ...}``
    plus the alert's fields); ``repeat_s`` overrides ``RAYPLEX_ALERT_REPEAT_S`` (at most one
    POST per rule and client in that many seconds)."""

    url: str
    repeat_s: float | None = None


@dataclass(frozen=True)
class Rule:
    """One watch rule (made by :func:`nan`, :func:`threshold`, :func:`silent`,
    :func:`step_lag`, :func:`outlier` or :func:`crashed`). ``group`` scopes it to the clients
    of one group (required for ``step_lag`` and ``outlier``)."""

    kind: str
    tag: str = ""
    group: str = ""
    below: float | None = None
    above: float | None = None
    for_steps: int = 1
    seconds: float = 0.0
    max_lag: int = 0
    z: float = 4.0
    notify: tuple[Webhook, ...] = ()
    on_alert: str | None = None

    @property
    def name(self) -> str:
        """How alerts name the rule, and its identity: declaring a rule of the same name again
        replaces it (its ``notify`` and ``on_alert``)."""
        args: list[str] = []
        if self.kind in ("nan", "threshold", "outlier"):
            args.append(self.tag)
        if self.kind == "step_lag":
            args += [self.group, str(self.max_lag)]
        elif self.group:
            args.append(f"group={self.group}")
        if self.kind == "threshold":
            args += [f"{k}={_num(v)}" for k, v in (("below", self.below), ("above", self.above))
                     if v is not None]
            if self.for_steps != 1:
                args.append(f"for_steps={self.for_steps}")
        if self.kind == "silent":
            args.insert(0, _num(self.seconds))
        if self.kind == "outlier" and self.z != 4.0:
            args.append(f"z={_num(self.z)}")
        return f"{self.kind}({', '.join(args)})"

    def applies_to(self, client: str) -> bool:
        """Whether the rule watches ``client`` (any client, or one of its group)."""
        return not self.group or client.partition("/")[0] == self.group


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not tag or len(tag) > 1000:
        raise ValueError(f"tag must be a non-empty glob pattern (str), got {tag!r}")
    return tag


def _check_group(group: object, required: bool) -> str:
    if group is None and not required:
        return ""
    if not isinstance(group, str):
        raise TypeError(f"group must be a str, got {type(group).__name__}")
    return validate_group_name(group)


def _check_number(name: str, value: object, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _check_int(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return value


def nan(tag: str, *, group: str | None = None) -> Rule:
    """A NaN or ±inf value of a tag matching ``tag`` (a glob over the tags as logged, e.g.
    ``"loss"``, ``"train/*"``) in any client (or any of ``group``).

    Raises:
        ValueError: for an empty tag or an invalid group name.
    """
    return Rule("nan", tag=_check_tag(tag), group=_check_group(group, False))


def threshold(tag: str, *, below: float | None = None, above: float | None = None,
              for_steps: int = 1, group: str | None = None) -> Rule:
    """A value of ``tag`` (glob) below ``below`` or above ``above`` for ``for_steps``
    consecutive points of a client (a run of points that starts inside one flush is counted
    from that flush's last point, so the alert may come later, never early).

    Raises:
        ValueError: with neither bound, a bound that is not a finite number, or
            ``for_steps < 1``.
    """
    if below is None and above is None:
        raise ValueError("threshold needs below=, above= or both")
    return Rule("threshold", tag=_check_tag(tag), group=_check_group(group, False),
                below=None if below is None else _check_number("below", below),
                above=None if above is None else _check_number("above", above),
                for_steps=_check_int("for_steps", for_steps, 1))


def silent(seconds: float, *, group: str | None = None) -> Rule:
    """A live client (its process alive and not closed) with no record and no heartbeat
    (``log.ping()``) for ``seconds``.

    Raises:
        ValueError: unless ``seconds`` is a positive number.
    """
    return Rule("silent", seconds=_check_number("seconds", seconds, positive=True),
                group=_check_group(group, False))


def step_lag(group: str, max_lag: int) -> Rule:
    """A member of ``group`` whose last step is more than ``max_lag`` steps behind the median
    of the members' last steps.

    Raises:
        ValueError: for an invalid group name or ``max_lag < 0``.
    """
    return Rule("step_lag", group=_check_group(group, True),
                max_lag=_check_int("max_lag", max_lag, 0))


def outlier(tag: str, *, group: str, z: float = 4.0) -> Rule:
    """A member of ``group`` whose latest value of ``tag`` (glob) is more than ``z`` robust
    standard deviations (1.4826 × the median absolute deviation) from the members' median.

    Raises:
        ValueError: for an empty tag, an invalid group or a ``z`` that is not positive.
    """
    return Rule("outlier", tag=_check_tag(tag), group=_check_group(group, True),
                z=_check_number("z", z, positive=True))


def crashed(*, group: str | None = None) -> Rule:
    """A client whose process died without closing its session (its node buffer sees the pid
    vanish)."""
    return Rule("crashed", group=_check_group(group, False))


def webhook(url: str, *, repeat_s: float | None = None) -> Webhook:
    """A webhook for ``hub.watch(rule, notify=...)`` (a Slack incoming webhook, or any server
    taking a JSON POST).

    Raises:
        ValueError: unless ``url`` is an ``http(s)://`` URL; for a ``repeat_s`` < 0.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000:
        raise ValueError(f"a webhook URL starts with http:// or https://, got {url!r:.100}")
    if repeat_s is not None:
        repeat_s = _check_number("repeat_s", repeat_s)
        if repeat_s < 0:
            raise ValueError(f"repeat_s must be >= 0, got {repeat_s!r}")
    return Webhook(url, repeat_s)


def with_actions(rule: Rule, notify: object = None, on_alert: object = None) -> Rule:
    """``rule`` with its webhooks (one :class:`Webhook`, a URL, or a list of them) and action.

    Raises:
        TypeError: ``rule`` is not a :class:`Rule`, or ``notify`` holds something else.
        ValueError: ``on_alert`` is not ``None`` or ``"stop"``; a bad URL.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"watch takes a rule made by rayplex.watch.nan/threshold/..., got "
                        f"{type(rule).__name__}")
    if on_alert not in ACTIONS:
        raise ValueError(f"on_alert must be None or 'stop', got {on_alert!r}")
    items = [] if notify is None else list(notify) if isinstance(notify, (list, tuple)) else [
        notify]
    hooks = []
    for item in items:
        if isinstance(item, str):
            item = webhook(item)
        if not isinstance(item, Webhook):
            raise TypeError(f"notify takes rayplex.watch.webhook(url) (or a list), got {item!r:.80}")
        hooks.append(item)
    action: str | None = on_alert
    return dataclasses.replace(rule, notify=tuple(hooks), on_alert=action)


# -------------------------------------------------------------------------- codecs
_T = TypeVar("_T")


def rule_to_json(rule: Rule) -> dict[str, Any]:
    """A rule as a JSON object."""
    data = dataclasses.asdict(rule)
    data["notify"] = [{"url": h.url, "repeat_s": h.repeat_s} for h in rule.notify]
    return data


def _from_json(what: str, data: object, build: Callable[[dict[str, Any]], _T]) -> _T:
    """``build(data)`` for a JSON object ``data``; the one check both codecs make: data that is
    not an object, lacks a key or holds a value of the wrong type raises :class:`ValueError`
    naming ``what`` (as do the checks ``build`` makes itself)."""
    if not isinstance(data, dict):
        raise ValueError(f"malformed {what}: not a JSON object ({type(data).__name__})")
    try:
        return build(data)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed {what} ({exc!r:.200})") from None


def rule_from_json(data: object) -> Rule:
    """Rebuild a rule from :func:`rule_to_json`, checked by the constructors above.

    Raises:
        ValueError: if ``data`` is malformed.
    """
    return _from_json("rule", data, _rule)


def _rule(data: dict[str, Any]) -> Rule:
    kind = data["kind"]
    group = data.get("group") or None
    if kind == "nan":
        rule = nan(data["tag"], group=group)
    elif kind == "threshold":
        rule = threshold(data["tag"], below=data.get("below"), above=data.get("above"),
                         for_steps=data.get("for_steps", 1), group=group)
    elif kind == "silent":
        rule = silent(data["seconds"], group=group)
    elif kind == "step_lag":
        rule = step_lag(data["group"], data["max_lag"])
    elif kind == "outlier":
        rule = outlier(data["tag"], group=data["group"], z=data.get("z", 4.0))
    elif kind == "crashed":
        rule = crashed(group=group)
    else:
        raise ValueError(f"unknown rule kind {kind!r:.40}")
    hooks = [webhook(h["url"], repeat_s=h.get("repeat_s")) for h in data.get("notify", [])]
    return with_actions(rule, hooks, data.get("on_alert"))


@dataclass(frozen=True)
class Alert:
    """One alert, as written to ``alerts.jsonl`` and read back by :func:`alerts`.

    Attributes:
        rule: The rule's name (``"nan(loss)"``).
        group, client: The client it is about (``""`` for none).
        node, pid: Where that client's process runs (``""`` / ``None`` when not known yet).
        step, value: The step and value that raised it, where it applies.
        median: The group's median (``step_lag``: of the last steps; ``outlier``: of the
            values), where it applies.
        wall_time: When the hub raised it (seconds since the epoch).
        message: One line for humans.
    """

    rule: str
    group: str
    client: str
    node: str
    pid: int | None
    step: int | None
    value: float | None
    median: float | None
    wall_time: float
    message: str


def _float_json(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)  # "nan", "inf", "-inf": alerts.jsonl stays strict JSON


def alert_to_json(alert: Alert) -> dict[str, Any]:
    """An alert as a strict-JSON object (NaN and ±inf as the strings ``"nan"``, ``"inf"``)."""
    data = dataclasses.asdict(alert)
    data["value"] = _float_json(alert.value)
    data["median"] = _float_json(alert.median)
    return data


def alert_from_json(data: object) -> Alert:
    """Rebuild an alert from :func:`alert_to_json`.

    Raises:
        ValueError: if ``data`` is malformed.
    """
    return _from_json("alert", data, _alert)


def _alert(data: dict[str, Any]) -> Alert:
    def number(key: str) -> float | None:
        value = data.get(key)
        return None if value is None else float(value)

    step, pid = data.get("step"), data.get("pid")
    return Alert(str(data["rule"]), str(data["group"]), str(data["client"]), str(data["node"]),
                 None if pid is None else int(pid), None if step is None else int(step),
                 number("value"), number("median"), float(data["wall_time"]),
                 str(data["message"]))


def alerts(logdir: str | os.PathLike[str]) -> list[Alert]:
    """The alerts of an experiment, oldest first, read from ``logdir/alerts.jsonl`` (no Ray;
    an empty list if none was raised). A torn last line (being written) is skipped.

    Example:
        >>> alerts("/tmp/exp1")[0].rule  # doctest: +SKIP
        'nan(loss)'
    """
    path = alerts_path(os.fspath(logdir))
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            out.append(alert_from_json(json.loads(line)))
        except ValueError:  # a torn line at the end while it is being appended
            continue
    return out


# ------------------------------------------------------------------ group statistics
def tag_matches(pattern: str, tag: str) -> bool:
    """Whether ``tag`` (as logged) matches the rule's glob ``pattern`` (case-sensitive)."""
    return fnmatch.fnmatchcase(tag, pattern)


def lagging(steps: Mapping[str, int], max_lag: int) -> dict[str, float]:
    """``{member: median}`` of the members whose last step is more than ``max_lag`` behind the
    median of all members' last steps (none with fewer than two members)."""
    if len(steps) < 2:
        return {}
    median = float(statistics.median(steps.values()))
    return {member: median for member, step in steps.items() if median - step > max_lag}


def outliers(values: Mapping[str, float], z: float) -> dict[str, tuple[float, float]]:
    """``{member: (median, robust z-score)}`` of the members whose value is more than ``z``
    robust standard deviations (``MAD_SCALE`` × the median absolute deviation) from the
    members' median. Needs at least three finite values; with a MAD of 0 (most members
    equal), any member that differs is an outlier."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if len(finite) < 3:
        return {}
    median = float(statistics.median(finite.values()))
    mad = float(statistics.median(abs(v - median) for v in finite.values())) * MAD_SCALE
    out = {}
    for member, value in finite.items():
        deviation = abs(value - median)
        score = deviation / mad if mad > 0 else (math.inf if deviation > 0 else 0.0)
        if score > z:
            out[member] = (median, score)
    return out


# ------------------------------------------------------------------------- digests
Digest = tuple[tuple[str, int, int, float, float, float, int, int, float], ...]
"""What a worker attaches to each chunk of scalars (:attr:`rayplex.records.Chunk.digest`), so
that the hub evaluates rules per tag and flush, not per scalar: one entry per tag as logged,
``(tag, count, last_step, last_value, min, max, non_finite, first_bad_step, first_bad_value)``
(``min``/``max`` over the finite values, NaN if none; ``first_bad_*`` the first NaN or ±inf,
step -1 if none)."""


SMALL_DIGEST = 48
"""Up to this many scalars a digest is computed in plain Python (numpy's fixed cost is
larger)."""


def digest(tags: list[str], tag_ids: Any, steps: Any, values: Any) -> Digest:
    """The :data:`Digest` of scalars given as columns (sequences or numpy arrays: ``tag_ids``
    index ``tags``), computed at once per tag (with numpy beyond ``SMALL_DIGEST`` scalars).

    Example:
        >>> import numpy as np
        >>> digest(["loss", "lr"], np.array([0, 1, 0]), np.array([1, 1, 2]),
        ...        np.array([0.5, 1e-3, np.nan]))
        (('loss', 2, 2, nan, 0.5, 0.5, 1, 2, nan), ('lr', 1, 1, 0.001, 0.001, 0.001, 0, -1, 0.0))
    """
    if len(steps) <= SMALL_DIGEST:
        return _small_digest(tags, tag_ids, steps, values)
    return _numpy_digest(tags, tag_ids, steps, values)


def _numpy_digest(tags: list[str], tag_ids: Any, steps: Any, values: Any) -> Digest:
    """:func:`digest` with numpy, for many scalars."""
    import numpy as np

    tag_ids, steps, values = (np.asarray(tag_ids), np.asarray(steps, dtype=np.int64),
                              np.asarray(values, dtype=np.float64))
    order = np.argsort(tag_ids, kind="stable")
    sorted_ids = tag_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    ends = np.r_[starts[1:], len(order)]
    vals = values[order]
    finite = np.isfinite(vals)
    with np.errstate(invalid="ignore"):
        clean = np.where(finite, vals, np.nan)
        lows = np.fmin.reduceat(clean, starts)
        highs = np.fmax.reduceat(clean, starts)
    bad = np.add.reduceat(~finite, starts)
    out = []
    for k in range(len(starts)):
        lo, hi = int(starts[k]), int(ends[k])
        last = int(order[hi - 1])
        bad_step, bad_value = -1, 0.0
        if bad[k]:
            first = int(order[lo + int(np.argmax(~finite[lo:hi]))])
            bad_step, bad_value = int(steps[first]), float(values[first])
        out.append((tags[int(sorted_ids[lo])], hi - lo, int(steps[last]), float(values[last]),
                    float(lows[k]), float(highs[k]), int(bad[k]), bad_step, bad_value))
    return tuple(out)


def _small_digest(tags: list[str], tag_ids: Any, steps: Any, values: Any) -> Digest:
    """:func:`digest` in plain Python, for a few scalars."""
    acc: dict[int, list[Any]] = {}
    for t, step, value in zip(tag_ids, steps, values, strict=True):
        t, step, value = int(t), int(step), float(value)
        row = acc.get(t)
        if row is None:
            row = acc[t] = [0, step, value, math.nan, math.nan, 0, -1, 0.0]
        row[0] += 1
        row[1], row[2] = step, value
        if math.isfinite(value):
            row[3] = value if not row[3] <= value else row[3]
            row[4] = value if not row[4] >= value else row[4]
        else:
            if not row[5]:
                row[6], row[7] = step, value
            row[5] += 1
    return tuple((tags[t], r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])
                 for t, r in sorted(acc.items()))
