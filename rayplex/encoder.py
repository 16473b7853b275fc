"""Items → one :class:`~rayplex.records.Batch`: routing and TensorBoard encoding, done once,
on the worker, with the group registry the worker holds. Pure: no Ray, no I/O.

The hub never routes: if the registry used here is stale, the hub answers with the current one
and the sender encodes the same items again with it (:meth:`Encoder.adopt`).

Example:
    >>> from rayplex.groups import GroupRegistry, GroupSpec
    >>> from rayplex.items import Scalar
    >>> enc = Encoder(GroupRegistry().with_group(GroupSpec.indexed("agent", 8)))
    >>> batch = enc.encode([Scalar("agent/3", "reward", 1, 0.0, 2.0)], "sender-a", 1, "exp")
    >>> [(c.client_id, c.run, c.count) for c in batch.chunks]
    [('agent/3', 'agent/3', 1)]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from rayplex.event_bytes import ScalarTemplate, event_record, scalar_records, scalar_tail, tag_header
from rayplex.groups import GroupRegistry, Route
from rayplex.items import FixedValue, Item, Line, PartialItem, Scalar, Value
from rayplex.records import Batch, Chunk
from rayplex.watch import Digest, digest

log = logging.getLogger("rayplex")


class Encoder:
    """Routes and encodes items with one registry; caches per-tag bytes between batches."""

    def __init__(self, registry: GroupRegistry) -> None:
        self.registry = registry
        self._routes: dict[str, Route] = {}
        self._tag_fields: dict[tuple[str, str], bytes] = {}
        self._tails: dict[tuple[str, str], bytes] = {}
        self.unroutable = 0
        """Items routed as a normal group because their group's rule refused them."""
        self.unencodable = 0
        """Items dropped because they could not be encoded (logged as warnings)."""

    def adopt(self, registry: GroupRegistry) -> None:
        """Use ``registry`` from now on (forgetting every cached route and tag)."""
        self.registry = registry
        self._routes.clear()
        self._tag_fields.clear()
        self._tails.clear()

    def route(self, client_id: str) -> Route:
        """The route of ``client_id``; a client its group refuses (e.g. a ``bin_fn`` that
        raises) is routed as a normal group, with a warning: this is a background path."""
        route = self._routes.get(client_id)
        if route is None:
            try:
                route = self.registry.route(client_id)
            except ValueError as exc:
                self.unroutable += 1
                log.warning("rayplex: %s; routing %s as a normal group", exc, client_id)
                route = GroupRegistry().route(client_id)
            self._routes[client_id] = route
        return route

    def _tag_field(self, client_id: str, tag: str) -> bytes:
        field = self._tag_fields.get((client_id, tag))
        if field is None:
            field = self._tag_fields[(client_id, tag)] = tag_header(self.route(client_id).tag(tag))
        return field

    def _tail(self, client_id: str, tag: str) -> bytes:
        tail = self._tails.get((client_id, tag))
        if tail is None:
            tail = self._tails[(client_id, tag)] = scalar_tail(self._tag_field(client_id, tag))
        return tail

    def encode(self, items: Sequence[Item], sender: str, seq: int, experiment: str) -> Batch:
        """One batch holding ``items``, in order per tag."""
        chunks: dict[tuple[str, str], _ChunkBuilder] = {}
        lines: list[Any] = []
        partials: list[Any] = []
        for item in items:
            kind = type(item)
            if kind is tuple or kind is Scalar:  # the hot path: gather columns, encode at once
                client_id, tag, step, wall_time, value = item  # type: ignore[misc]
                run = self.route(client_id).run
                builder = chunks.get((client_id, run))
                if builder is None:
                    builder = chunks[(client_id, run)] = _ChunkBuilder()
                builder.add_scalar(tag, self._tail, client_id, step, wall_time,
                                   value)  # type: ignore[arg-type]
            elif kind is Line:
                lines.append(item.line)  # type: ignore[union-attr]
            elif kind is PartialItem:
                partials.append(item.partial)  # type: ignore[union-attr]
            else:
                try:
                    client_id, run, record = self._encode_value(item)
                except Exception as exc:  # one bad record must not cost the others
                    self.unencodable += 1
                    log.warning("rayplex: dropped a record that could not be encoded (%s %r): %s",
                                type(item).__name__, item[:2], exc)
                    continue
                builder = chunks.get((client_id, run))
                if builder is None:
                    builder = chunks[(client_id, run)] = _ChunkBuilder()
                builder.records.append(record)
        out = [Chunk(client_id, run, *builder.build())
               for (client_id, run), builder in chunks.items()]
        return Batch(sender, seq, self.registry.stamp, out, lines, partials,
                     experiment=experiment)

    def _encode_value(self, item: Item) -> tuple[str, str, bytes]:
        if type(item) is Value:
            client_id, tag, step, wall_time, payload = item
            return (client_id, self.route(client_id).run,
                    event_record(self._tag_field(client_id, tag), wall_time, step, payload))
        if type(item) is FixedValue:
            client_id, tag, step, wall_time, payload, run = item
            return client_id, run, event_record(tag_header(tag), wall_time, step, payload)
        raise TypeError(f"not an item: {item!r:.80}")


class _ChunkBuilder:
    """One chunk while a batch is encoded: scalars as columns (encoded together by
    :func:`rayplex.event_bytes.scalar_records`), other values as ready records."""

    __slots__ = ("tag_ids", "tails", "scalar_tags", "wall_times", "steps", "values", "records")

    def __init__(self) -> None:
        self.tag_ids: dict[str, int] = {}
        self.tails: list[bytes] = []
        self.scalar_tags: list[int] = []
        self.wall_times: list[float] = []
        self.steps: list[int] = []
        self.values: list[float] = []
        self.records: list[bytes] = []

    def add_scalar(self, tag: str, tail_of: Any, client_id: str, step: int, wall_time: float,
                   value: float) -> None:
        index = self.tag_ids.get(tag)
        if index is None:
            index = self.tag_ids[tag] = len(self.tails)
            self.tails.append(tail_of(client_id, tag))
        self.scalar_tags.append(index)
        self.wall_times.append(wall_time)
        self.steps.append(step)
        self.values.append(value)

    @property
    def count(self) -> int:
        return len(self.steps) + len(self.records)

    def build(self) -> tuple[bytes, int, Digest]:
        """Framed records: scalars first, then the rest (the order within each tag is kept,
        which is all TensorBoard relies on); their count; the scalars' digest for the hub's
        watch rules (:func:`rayplex.watch.digest`)."""
        scalars = b""
        summary: Digest = ()
        if self.steps:
            tag_ids = np.asarray(self.scalar_tags)
            steps = np.asarray(self.steps, dtype=np.int64)
            values = np.asarray(self.values, dtype=np.float64)
            summary = digest(list(self.tag_ids), self.scalar_tags, self.steps, self.values)
            try:
                scalars = scalar_records(self.tails, tag_ids,
                                         np.asarray(self.wall_times, dtype=np.float64),
                                         steps, values)
            except OverflowError:  # pragma: no cover - steps are checked to fit int64
                scalars = b"".join(
                    ScalarTemplate.from_tail(self.tails[t]).record(w, s, v) for t, w, s, v in
                    zip(self.scalar_tags, self.wall_times, self.steps, self.values, strict=True))
        return scalars + b"".join(self.records), self.count, summary
