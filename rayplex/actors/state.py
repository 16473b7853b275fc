"""The hub's state on disk, as data: JSON codecs and atomic files, never a pickle.

A logdir may come from anywhere (copied, shared, downloaded), and ``rayplex.init`` on it must
not run code found there. So the hub keeps its registered groups in ``.rayplex/registry.json``
and its journal as CRC-framed JSON records (:mod:`rayplex.actors.journal`); every field is
checked when read, and a torn, foreign or hostile file is reported and ignored, never
executed and never fatal. Files of older versions (``registry.pkl``, cloudpickle journals) are
not read at all.

One thing cannot be data: a combined group's ``bin_fn``. It is not persisted. After a hub
restart the group is restored as combined with ``bin_fn=None``, which routes each client into
a bin named by its own name (``eval/stoch-1`` → tag ``eval/reward/stoch-1``), and the restored
registry's version is one higher than the saved one, so that no worker mixes the two routings
under one stamp. Registering the combined group again (with its ``bin_fn``) after a hub
restart is the driver's job.

Example:
    >>> import os, tempfile
    >>> from rayplex.groups import GroupRegistry, GroupSpec
    >>> registry = GroupRegistry(epoch="e1").with_group(GroupSpec.indexed("agent", 8))
    >>> path = os.path.join(tempfile.mkdtemp(), "registry.json")
    >>> save_registry(path, registry)
    >>> load_registry(path) == registry
    True
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from rayplex.atomic import atomic_write_bytes as atomic_write
from rayplex.groups import COMBINED, GroupRegistry, registry_from_json, registry_to_json
from rayplex.layout import LEGACY_REGISTRY_FILE as LEGACY_REGISTRY_FILE  # tests use these
from rayplex.layout import REGISTRY_FILE as REGISTRY_FILE
from rayplex.logdir_codec import read_bounded
from rayplex.records import Partial
from rayplex.rules import check_step, split_client_id, validate_group_name, validate_metric_key
from rayplex.stats import PartialStats
from rayplex.watch import Rule, rule_from_json, rule_to_json

log = logging.getLogger("rayplex.hub")



def save_registry(path: str, registry: GroupRegistry) -> None:
    """Write the registry to ``path`` atomically (temp file, fsync, rename).

    Raises:
        OSError: if it cannot be written (the previous file, if any, is left as it was).
    """
    atomic_write(path, (json.dumps(registry_to_json(registry), indent=1, allow_nan=False)
                        + "\n").encode("utf-8"))


def load_registry(path: str) -> GroupRegistry | None:
    """Read the registry saved at ``path``; ``None`` if there is none or it cannot be used.

    A torn, foreign or hostile file is reported with a warning and ignored. A legacy
    ``registry.pkl`` next to a missing ``path`` is reported and not read. If combined groups
    lost their ``bin_fn``, the version is one higher than the one saved.
    """
    if not os.path.exists(path):
        legacy = os.path.join(os.path.dirname(path), LEGACY_REGISTRY_FILE)
        if os.path.exists(legacy):
            log.warning("%s was written by an older rayplex and is not read (rayplex never "
                        "unpickles hub state); register the groups again", legacy)
        return None
    try:
        registry = registry_from_json(json.loads(read_bounded(path)))
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeError, JSONDecodeError too
        log.warning("could not read %s (%s); starting with no registered groups",
                    path, str(exc)[:200])
        return None
    if any(spec.kind == COMBINED for spec in registry.groups.values()):
        log.warning("%s: combined groups %s are restored without their bin_fn (each client in "
                    "a bin of its own name) until the driver registers them again", path,
                    sorted(s.name for s in registry.groups.values() if s.kind == COMBINED))
        registry = GroupRegistry(registry.groups, registry.version + 1, registry.epoch)
    return registry


# ----------------------------------------------------------------- partials
def partial_to_json(partial: Partial) -> dict[str, Any]:
    """A :class:`~rayplex.records.Partial` as a JSON object (statistics exact)."""
    return {
        "group": partial.group,
        "step": partial.step,
        "stats": list(partial.stats),
        "metrics": {key: stats.to_json() for key, stats in partial.metrics.items()},
        "clients": list(partial.clients),
        "contributors": [list(c) for c in partial.contributors],
    }


def partial_from_json(data: object) -> Partial:
    """Rebuild a partial from :func:`partial_to_json` output, checking every field.

    Raises:
        ValueError: if ``data`` is malformed.
    """
    try:
        return _partial_from_json(data)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"malformed partial ({exc!r:.200})") from None


def _partial_from_json(data: Any) -> Partial:
    if not isinstance(data, dict):
        raise ValueError("a partial must be an object")
    group = validate_group_name(data["group"], internal=True)
    if not _is_int(data["step"]):
        raise ValueError("a partial's step must be an int")
    step = check_step(data["step"])
    stats = tuple(data["stats"])
    if not all(isinstance(s, str) for s in stats):
        raise ValueError("stat names must be strings")
    PartialStats().summary(stats)  # ValueError for an unknown stat name
    if not isinstance(data["metrics"], dict):
        raise ValueError("a partial's metrics must be an object")
    metrics = {validate_metric_key(k): PartialStats.from_json(v)
               for k, v in data["metrics"].items()}
    clients = tuple(data["clients"])
    for client in clients:
        split_client_id(client, internal=True)
    contributors = []
    for item in data["contributors"]:
        sender, seq = item
        if not isinstance(sender, str) or not _is_int(seq):
            raise ValueError("a contributor must be [sender, seq]")
        contributors.append((sender, seq))
    return Partial(group, step, stats, metrics, clients, tuple(contributors))


def statistics_to_json(stats: PartialStats) -> dict[str, Any]:
    """:meth:`PartialStats.to_json`, for symmetry with the other codecs here."""
    return stats.to_json()


def statistics_from_json(data: object) -> PartialStats:
    """:meth:`PartialStats.from_json` (``ValueError`` on malformed input)."""
    return PartialStats.from_json(data)


# -------------------------------------------------------------------- files
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -------------------------------------------------------------------- watch rules
def save_rules(path: str, rules: list[Rule]) -> None:
    """Write the watch rules to ``path`` (``.rayplex/watch.json``) atomically, as JSON.

    Raises:
        OSError: if it cannot be written.
    """
    atomic_write(path, (json.dumps([rule_to_json(r) for r in rules], indent=1, allow_nan=False)
                        + "\n").encode("utf-8"))


def load_rules(path: str) -> list[Rule]:
    """The watch rules saved at ``path`` (none if there is no file); a torn, foreign or hostile
    file, or one bad rule in it, is reported and skipped, never executed.

    Example:
        >>> import os, tempfile
        >>> from rayplex import watch
        >>> path = os.path.join(tempfile.mkdtemp(), "watch.json")
        >>> save_rules(path, [watch.nan("loss"), watch.silent(30)])
        >>> [r.name for r in load_rules(path)]
        ['nan(loss)', 'silent(30)']
    """
    if not os.path.exists(path):
        return []
    try:
        data = json.loads(read_bounded(path))
        if not isinstance(data, list):
            raise ValueError("not a list of rules")
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("could not read %s (%s); no watch rules until the driver declares them "
                    "again", path, str(exc)[:200])
        return []
    rules = []
    for item in data:
        try:
            rules.append(rule_from_json(item))
        except ValueError as exc:
            log.warning("%s: skipped a watch rule: %s", path, str(exc)[:200])
    return rules
