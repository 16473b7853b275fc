"""``store_metrics`` partials applied exactly once, whatever is resent or replayed.

A worker's :class:`~rayplex.records.Partial` travels inside its batch, so it carries the batch's
``(sender, seq)``. The node buffer merges the partials of the batches it forwards together
(:func:`merge_partials`), recording in ``contributors`` every batch merged in. The hub then
applies a merged partial only if *all* its contributors are fresh (not yet committed)
(:func:`select_partials`): merging stale and fresh data would count the stale part twice, and
it cannot be taken apart again. The fresh contributors of such a partial are deferred instead:
the hub does not commit those batches in this call and tells their senders to resend them; a
resend is merged again, and soon arrives among fresh batches only.

This replaces de-duplication by node-buffer call ``(node, seq)``, which double counted when a
restarted node buffer (a new node id) forwarded the resends of a call the hub had applied.

Example:
    >>> from rayplex.records import Batch, Partial
    >>> from rayplex.stats import PartialStats
    >>> def batch(sender, seq, value):
    ...     part = Partial("agent", 0, ("count",), {"r": PartialStats([value])}, ("agent/0",))
    ...     return Batch(sender, seq, ("", 0), partials=[part])
    >>> merged, batches = merge_partials([batch("a", 1, 1.0), batch("b", 4, 2.0)])
    >>> merged[0].contributors, [b.partials for b in batches]
    ((('a', 1), ('b', 4)), [[], []])
    >>> apply, defer = select_partials(merged, fresh={("a", 1), ("b", 4)})
    >>> len(apply), defer
    (1, set())
    >>> select_partials(merged, fresh={("b", 4)})  # ("a", 1) was committed before
    ([], {('b', 4)})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from rayplex.records import Batch, Partial

BatchId = tuple[str, int]
"""``(sender, seq)`` of one batch."""


def merge_partials(batches: Iterable[Batch]) -> tuple[list[Partial], list[Batch]]:
    """Merge the partials of ``batches`` per (group, step); return them and the batches emptied.

    Every batch counts once: a batch that appears twice (a worker's resend that caught up with
    its first send in the same node-buffer round) contributes its partials once. Merged
    partials union the stat names, ``clients`` and ``contributors`` of what they merge; the
    inputs are not modified (statistics are copied), and the returned batches are new objects
    with ``partials=[]``, in the order given.

    Returns:
        ``(partials, batches)``: partials in order of first appearance, with sorted
        ``clients`` and ``contributors``.
    """
    merged: dict[tuple[str, int], Partial] = {}
    seen: set[BatchId] = set()
    out: list[Batch] = []
    for batch in batches:
        batch_id = (batch.sender, batch.seq)
        if batch.partials and batch_id not in seen:
            seen.add(batch_id)
            for partial in batch.partials:
                _merge_into(merged, partial, (batch_id,))
        out.append(dataclasses.replace(batch, partials=[]) if batch.partials else batch)
    return [_sorted_ids(p) for p in merged.values()], out


def select_partials(partials: Iterable[Partial],
                    fresh: set[BatchId]) -> tuple[list[Partial], set[BatchId]]:
    """Split merged partials into those to apply now and the batches to defer.

    Args:
        partials: Merged partials (from :func:`merge_partials`), each with ``contributors``.
        fresh: ``(sender, seq)`` of the call's batches that are not committed yet (neither
            written nor quarantined before).

    Returns:
        ``(apply, defer)``. A partial is applied when every contributor is fresh and none is
        deferred. A partial with a contributor that is not fresh is dropped (that batch's
        statistics are already counted) and its fresh contributors are deferred; deferral
        spreads to every other partial that shares a deferred contributor (a deferred batch is
        resent whole, so none of its statistics may be applied now). The hub must neither
        write nor commit a deferred batch in this call, and must ask its sender to resend it.
        A partial without contributors is applied as is.
    """
    partials = list(partials)
    defer: set[BatchId] = set()
    for partial in partials:
        ids = set(partial.contributors)
        if not ids <= fresh:
            defer |= ids & fresh
    changed = bool(defer)
    while changed:  # a deferred batch poisons every partial it contributed to
        changed = False
        for partial in partials:
            ids = set(partial.contributors)
            if ids & defer and not (ids & fresh) <= defer:
                defer |= ids & fresh
                changed = True
    apply = [p for p in partials
             if set(p.contributors) <= fresh and not set(p.contributors) & defer]
    return apply, defer


def _merge_into(merged: dict[tuple[str, int], Partial], partial: Partial,
                contributors: tuple[BatchId, ...]) -> None:
    into = merged.get((partial.group, partial.step))
    if into is None:
        merged[(partial.group, partial.step)] = Partial(
            partial.group, partial.step, tuple(partial.stats),
            {key: stats.copy() for key, stats in partial.metrics.items()},
            tuple(partial.clients), contributors)
        return
    into.stats = tuple(dict.fromkeys(into.stats + tuple(partial.stats)))
    for key, stats in partial.metrics.items():
        if key in into.metrics:
            into.metrics[key].merge(stats)
        else:
            into.metrics[key] = stats.copy()
    into.clients = into.clients + tuple(partial.clients)
    into.contributors = into.contributors + contributors


def _sorted_ids(partial: Partial) -> Partial:
    partial.clients = tuple(sorted(set(partial.clients)))
    partial.contributors = tuple(sorted(set(partial.contributors)))
    return partial
