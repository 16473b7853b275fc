"""store_metrics partials are applied exactly once, whatever node buffers resend or replay."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rayplex.actors.partials import merge_partials, select_partials
from rayplex.records import Batch, Partial
from rayplex.stats import PartialStats


def _batch(sender: str, seq: int, values: list[float], step: int = 0) -> Batch:
    partial = Partial("agent", step, ("count",), {"reward": PartialStats(values)},
                      (f"agent/{sender}",))
    return Batch(sender, seq, ("", 0), partials=[partial])


class _Hub:
    """The hub's side of the protocol, as the lead wires it: dedup by (sender, seq), apply
    what select_partials allows, commit the fresh batches that are not deferred."""

    def __init__(self) -> None:
        self.last_seq: dict[str, int] = {}
        self.totals: dict[tuple[str, int], PartialStats] = {}

    def write_node(self, batches: list[Batch]) -> dict[tuple[str, int], str]:
        partials, batches = merge_partials(batches)  # what the node buffer does
        fresh = {(b.sender, b.seq) for b in batches if b.seq > self.last_seq.get(b.sender, -1)}
        apply, defer = select_partials(partials, fresh)
        for partial in apply:
            into = self.totals.setdefault((partial.group, partial.step), PartialStats())
            into.merge(partial.metrics["reward"])
        acks = {}
        for batch in batches:
            batch_id = (batch.sender, batch.seq)
            if batch_id in defer:
                acks[batch_id] = "resend"
            elif batch_id in fresh:
                self.last_seq[batch.sender] = batch.seq
                acks[batch_id] = "written"
            else:
                acks[batch_id] = "duplicate"
        return acks

    def count(self, step: int = 0) -> int:
        return self.totals[("agent", step)].count


def test_merge_partials_merges_per_group_and_step_and_empties_the_batches() -> None:
    a, b = _batch("a", 1, [1.0, 2.0]), _batch("b", 7, [3.0])
    c = _batch("c", 2, [5.0], step=1)
    partials, batches = merge_partials([a, b, c])
    assert [(p.step, p.metrics["reward"].count) for p in partials] == [(0, 3), (1, 1)]
    assert partials[0].contributors == (("a", 1), ("b", 7))
    assert partials[0].clients == ("agent/a", "agent/b")
    assert [bt.partials for bt in batches] == [[], [], []]
    assert a.partials[0].metrics["reward"].count == 2  # the inputs are untouched


def test_a_batch_present_twice_in_one_call_is_merged_once() -> None:
    a = _batch("a", 1, [1.0, 2.0])
    partials, batches = merge_partials([a, a])
    assert partials[0].metrics["reward"].count == 2 and len(batches) == 2


def test_replaying_a_node_call_after_it_was_applied_never_double_counts() -> None:
    hub = _Hub()
    call = [_batch("a", 1, [1.0] * 5), _batch("b", 1, [2.0] * 5)]
    assert set(hub.write_node(call).values()) == {"written"}
    # The node buffer restarted while its call was in flight: the workers resend through a
    # new node buffer, which merges the same batches again.
    assert set(hub.write_node(call).values()) == {"duplicate"}
    assert hub.count() == 10


def test_a_stale_batch_merged_with_a_fresh_one_resolves_after_one_resend() -> None:
    hub = _Hub()
    a1, c1 = _batch("a", 1, [1.0] * 5), _batch("c", 1, [3.0] * 5)
    hub.write_node([a1])
    acks = hub.write_node([a1, c1])  # a1 resent (ack lost), c1 new, merged together
    assert acks == {("a", 1): "duplicate", ("c", 1): "resend"}
    assert hub.count() == 5
    assert hub.write_node([c1]) == {("c", 1): "written"}
    assert hub.count() == 10


def test_deferral_spreads_to_every_partial_of_a_deferred_batch() -> None:
    hub = _Hub()
    b1 = _batch("b", 1, [1.0])
    hub.write_node([b1])
    a1 = _batch("a", 1, [1.0])
    a1.partials.append(_batch("a", 1, [9.0], step=1).partials[0])  # a1 also has step 1
    acks = hub.write_node([a1, b1])  # step 0 mixes stale b1 with a1; step 1 is a1 alone
    assert acks[("a", 1)] == "resend" and ("agent", 1) not in hub.totals
    hub.write_node([a1])
    assert (hub.count(0), hub.count(1)) == (2, 1)


def test_a_partial_without_contributors_is_applied() -> None:
    partial = _batch("a", 1, [1.0]).partials[0]
    assert select_partials([partial], fresh=set()) == ([partial], set())


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_schedule_of_lost_acks_and_replays_counts_every_batch_once(data: st.DataObject) -> None:
    workers = data.draw(st.integers(1, 4))
    per_worker = data.draw(st.integers(1, 4))
    queues = {f"w{i}": [_batch(f"w{i}", seq, [1.0] * (seq + 1)) for seq in range(per_worker)]
              for i in range(workers)}
    expected = sum(seq + 1 for seq in range(per_worker)) * workers
    hub = _Hub()
    applied: list[Batch] = []  # calls a restarted node buffer may forward again
    for _ in range(200):
        if not any(queues.values()):
            break
        call = [q[0] for q in queues.values() if q and data.draw(st.booleans())]
        if applied and data.draw(st.booleans()):
            call += data.draw(st.lists(st.sampled_from(applied), max_size=3))
        if not call:
            continue
        acks = hub.write_node(call)
        lost = data.draw(st.booleans())  # the node buffer died: nobody hears the acks
        for batch in call:
            if acks[(batch.sender, batch.seq)] != "resend":
                applied.append(batch)
                queue = queues[batch.sender]
                if not lost and queue and queue[0] is batch:
                    queue.pop(0)
    for queue in queues.values():  # drain: everyone resends alone until acknowledged
        while queue:
            if hub.write_node([queue[0]])[(queue[0].sender, queue[0].seq)] != "resend":
                queue.pop(0)
    assert hub.count() == expected
