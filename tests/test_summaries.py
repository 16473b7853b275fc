"""The hub's SummaryBook writes each step's store_metrics summary once (plain objects, explicit
clocks: no Ray, no sleeps)."""

from __future__ import annotations

import json

import pytest

from rayplex.actors.faults import FaultWatch
from rayplex.actors.summaries import Summary, SummaryBook
from rayplex.records import Ack, Batch, NodeCall, Partial
from rayplex.stats import PartialStats

DELAY, SILENT = 1.0, 10.0


def _partial(client: str, step: int, *values: float, group: str = "agent") -> Partial:
    return Partial(group, step, ("count", "mean"), {"r": PartialStats(values)}, (client,))


def _steps(due: list[Summary]) -> list[tuple[str, int, float]]:
    return [(s.group, s.step, s.values["r/count"]) for s in due]


def _b_behind_a(a_step_1_at: float) -> SummaryBook:
    """A book with step 0 from agent/a and agent/b at t=0, and step 1 from agent/a alone."""
    book = SummaryBook(DELAY, SILENT)
    book.add(_partial("agent/a", 0, 1.0), now=0.0)
    book.add(_partial("agent/b", 0, 1.0), now=0.0)
    book.add(_partial("agent/a", 1, 1.0), now=a_step_1_at)
    return book


def test_two_clients_at_different_speeds_write_each_step_once_with_exact_counts() -> None:
    book = SummaryBook(DELAY, SILENT)
    written: list[tuple[str, int, float]] = []
    now = 0.0
    # "fast" summarises a step every 0.5 s, "slow" every 1.5 s; each stores 2 values a step.
    fast_t = [0.5 * i for i in range(12)]
    slow_t = [1.5 * i for i in range(12)]
    events = sorted([(t, "agent/fast", i) for i, t in enumerate(fast_t)]
                    + [(t, "agent/slow", i) for i, t in enumerate(slow_t)])
    for t, client, step in events:
        now = t
        book.add(_partial(client, step, 1.0, 1.0), now)
        written += _steps(book.due(now))
    now += SILENT / 2  # both clients are still alive: no forcing needed
    written += _steps(book.due(now))
    written += _steps(book.due(now + 1, force=True))
    assert written == [("agent", step, 4.0) for step in range(12)]


def test_a_step_waits_for_the_quiet_delay_after_its_last_partial() -> None:
    book = SummaryBook(DELAY, SILENT)
    book.add(_partial("agent/0", 0, 1.0), now=0.0)
    assert book.due(now=0.5) == []
    book.add(_partial("agent/1", 0, 1.0), now=0.9)  # a first partial from another node
    assert book.due(now=1.5) == []
    assert _steps(book.due(now=2.0)) == [("agent", 0, 2.0)]


def test_a_client_that_dies_mid_run_is_declared_silent_and_the_rest_continue() -> None:
    book = SummaryBook(DELAY, SILENT)
    for step in range(3):
        book.add(_partial("agent/a", step, 1.0), now=step)
        book.add(_partial("agent/b", step, 1.0), now=step)
    assert _steps(book.due(now=3.0)) == [("agent", s, 2.0) for s in range(3)]
    # agent/b dies after step 2; agent/a goes on
    for step in range(3, 12):
        book.add(_partial("agent/a", step, 1.0), now=step)
        assert book.due(now=step + DELAY) == []  # held back by b (last heard of at t=2)
    assert book.silent_clients(now=11.9) == []
    book.add(_partial("agent/a", 12, 1.0), now=12.0)  # a is heard 10 s after b's last partial
    assert book.silent_clients(now=12.0) == ["agent/b"]
    assert _steps(book.due(now=13.0)) == [("agent", s, 1.0) for s in range(3, 13)]
    book.add(_partial("agent/a", 13, 1.0), now=13.5)
    assert _steps(book.due(now=14.5)) == [("agent", 13, 1.0)]  # no longer waits for b


def test_nobody_is_declared_silent_while_the_hub_hears_nobody() -> None:
    book = _b_behind_a(a_step_1_at=1.0)
    # the hub was stalled for 30 s (it notices when it resumes): b's step 1 is on its way
    book.disturbed(now=31.0)
    assert book.silent_clients(now=31.0) == []
    assert _steps(book.due(now=31.0)) == [("agent", 0, 2.0)]
    book.add(_partial("agent/b", 1, 1.0), now=32.0)
    assert _steps(book.due(now=33.0)) == [("agent", 1, 2.0)]  # one point, both workers


def test_a_late_partial_from_a_silent_client_gives_exactly_one_flagged_second_point() -> None:
    book = SummaryBook(DELAY, SILENT)
    book.add(_partial("agent/a", 0, 1.0), now=0.0)
    book.add(_partial("agent/b", 0, 1.0), now=0.0)
    assert _steps(book.due(now=1.0)) == [("agent", 0, 2.0)]
    book.add(_partial("agent/a", 1, 1.0), now=1.0)
    book.add(_partial("agent/a", 2, 1.0), now=11.0)  # b silent: a heard 11 s after b
    assert book.due(now=20.0) == [Summary("agent", 1, {"r/count": 1.0, "r/mean": 1.0}, False),
                                  Summary("agent", 2, {"r/count": 1.0, "r/mean": 1.0}, False)]
    book.add(_partial("agent/b", 1, 5.0), now=21.0)  # b comes back with its step 1
    again = book.due(now=22.0)
    assert again == [Summary("agent", 1, {"r/count": 2.0, "r/mean": 3.0}, True)]
    assert book.due(now=30.0, force=True) == []  # once only


def test_force_takes_every_dirty_step_at_once() -> None:
    book = _b_behind_a(a_step_1_at=0.0)
    assert book.due(now=0.0) == []
    assert [(s.step, s.again) for s in book.due(now=0.0, force=True)] == [(0, False), (1, False)]
    assert len(book) == 0


def test_partials_without_clients_are_written_after_the_delay() -> None:
    book = SummaryBook(DELAY, SILENT)
    book.add(Partial("agent", 4, ("count",), {"r": PartialStats([1.0])}), now=0.0)
    assert _steps(book.due(now=1.0)) == [("agent", 4, 1.0)]


def test_pruning_is_per_group_and_refuses_partials_below_the_floor() -> None:
    book = SummaryBook(0.0, SILENT, keep_written=2)
    for step in range(5):
        book.add(_partial("agent/a", step, 1.0), now=step)
    book.add(_partial("eval/x", 0, 1.0, group="eval"), now=0.0)
    book.due(now=10.0)
    book.due(now=10.0)  # pruning happens before the next take
    assert book.add(_partial("eval/x", 0, 1.0, group="eval"), now=11.0)  # eval kept its step
    assert book.add(_partial("agent/a", 3, 1.0), now=11.0)  # kept: a second point
    assert not book.add(_partial("agent/a", 1, 1.0), now=11.0)  # pruned: refused, counted
    assert not book.add(_partial("agent/a", 0, 1.0), now=11.0)
    assert book.refused == 2
    due = book.due(now=12.0)
    assert [(s.group, s.step, s.again) for s in due] == [("agent", 3, True), ("eval", 0, True)]


def test_a_failed_write_is_handed_back_and_taken_again() -> None:
    book = SummaryBook(0.0, SILENT)
    book.add(_partial("agent/a", 0, 1.0), now=0.0)
    keys = [(s.group, s.step) for s in book.due(now=1.0)]
    book.mark_dirty(keys)
    assert _steps(book.due(now=2.0)) == [("agent", 0, 1.0)]


def test_the_book_round_trips_through_strict_json() -> None:
    book = SummaryBook(DELAY, SILENT, keep_written=1)
    for step in range(3):
        book.add(_partial("agent/a", step, float(step)), now=0.0)
        book.add(_partial("agent/b", step, 1.0), now=0.0)
    book.due(now=5.0)
    book.add(_partial("agent/a", 3, 7.0), now=6.0)
    book.due(now=6.0)  # prunes: floor at step 1
    text = json.dumps(book.to_json(), allow_nan=False)
    clone = SummaryBook.from_json(json.loads(text), DELAY, SILENT, keep_written=1, now=100.0)
    assert clone.to_json() == book.to_json()
    assert not clone.add(_partial("agent/a", 1, 1.0), now=100.0)
    # clocks restart at `now`: agent/b is not silent right after a hub restart
    assert clone.silent_clients(now=100.0) == []
    assert clone.due(now=102.0) == []  # step 3 waits for agent/b again
    clone.add(_partial("agent/a", 4, 1.0), now=110.0)
    assert _steps(clone.due(now=110.5)) == [("agent", 3, 1.0)]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: [],
        lambda d: {**d, "v": 2},
        lambda d: {**d, "refused": "3"},
        lambda d: {**d, "entries": [{**d["entries"][0], "group": "../x"}]},
        lambda d: {**d, "entries": [{**d["entries"][0], "stats": ["exec"]}]},
        lambda d: {**d, "entries": [{**d["entries"][0], "metrics": {"a\nb": {}}}]},
        lambda d: {**d, "groups": {"agent": {"floor": None, "clients": {"nope": [0, 0]}}}},
    ],
)
def test_from_json_refuses_malformed_books_with_value_error(corrupt: object) -> None:
    book = SummaryBook(DELAY, SILENT)
    book.add(_partial("agent/a", 0, 1.0), now=0.0)
    with pytest.raises(ValueError, match="SummaryBook JSON|client id|stat|tag|group"):
        SummaryBook.from_json(corrupt(book.to_json()), DELAY)  # type: ignore[operator]


HOLD = 6.0


def test_after_a_disturbance_no_step_is_written_until_resends_can_have_arrived() -> None:
    # a's partials arrived; b's first partial (step 0) was in flight when a fault struck
    book = SummaryBook(DELAY, SILENT, hold_s=HOLD)
    book.add(_partial("agent/a", 0, 1.0), now=0.0)
    book.add(_partial("agent/a", 1, 1.0), now=0.1)
    book.disturbed(now=0.5)
    assert book.due(now=0.5 + DELAY + 0.1) == []  # quiet, but a resend may still come
    book.add(_partial("agent/b", 0, 1.0), now=4.0)  # b's resend, after its back-off
    assert _steps(book.due(now=4.0 + HOLD)) == [("agent", 0, 2.0)]  # b's watermark holds 1
    book.add(_partial("agent/b", 1, 1.0), now=11.0)
    assert _steps(book.due(now=12.0)) == [("agent", 1, 2.0)]  # each step once, both workers


def test_a_new_client_holds_its_groups_quiet_time_writes_but_not_other_groups() -> None:
    # b's first partial was lost with a node buffer that died before forwarding it: the hub
    # sees nothing unusual, only a's partials, and b's resend after the node buffer restarted
    book = SummaryBook(DELAY, SILENT, hold_s=HOLD)
    book.add(_partial("agent/a", 0, 1.0), now=0.0)
    book.add(_partial("eval/x", 0, 1.0, group="eval"), now=0.0)
    assert _steps(book.due(now=HOLD - 0.1)) == []  # both groups have a new client
    book.add(_partial("agent/b", 0, 1.0), now=3.0)  # b's resend: agent held until 3 + HOLD
    book.add(_partial("eval/x", 1, 1.0, group="eval"), now=3.0)  # x is known: no new hold
    assert _steps(book.due(now=HOLD + DELAY)) == [("eval", 0, 1.0), ("eval", 1, 1.0)]
    assert _steps(book.due(now=3.0 + HOLD - 0.1)) == []
    assert _steps(book.due(now=3.0 + HOLD)) == [("agent", 0, 2.0)]  # once, both workers
    book.add(_partial("agent/a", 1, 1.0), now=10.0)
    book.add(_partial("agent/b", 1, 1.0), now=10.0)
    assert _steps(book.due(now=10.0 + DELAY)) == [("agent", 1, 2.0)]  # all known: no hold


def test_a_disturbance_extends_the_hold_and_flush_or_shutdown_ignore_it() -> None:
    book = SummaryBook(DELAY, SILENT, hold_s=HOLD)
    book.add(_partial("agent/a", 0, 1.0), now=0.0)
    book.disturbed(now=1.0)
    book.disturbed(now=4.0)  # a second fault: held until 4 + HOLD
    assert book.due(now=1.0 + HOLD + 0.5) == []
    assert _steps(book.due(now=5.0, quiet=False)) == [("agent", 0, 1.0)]  # an explicit flush
    book.add(_partial("agent/a", 1, 1.0), now=5.0)
    book.disturbed(now=5.0)
    assert _steps(book.due(now=5.0, force=True)) == [("agent", 1, 1.0)]  # shutdown


def test_joins_and_faults_that_never_stop_hold_no_step_past_twice_the_hold() -> None:
    book = SummaryBook(DELAY, SILENT, hold_s=HOLD)
    written: list[tuple[str, int, float]] = []
    for t in range(40):  # a new short-lived client every second, and a fault every second
        book.add(_partial(f"agent/t{t}", t, 1.0), now=float(t))
        book.disturbed(now=float(t))
        written += [(g, s, float(t)) for g, s, _ in _steps(book.due(now=float(t)))]
    assert [s for _, s, _ in written] == list(range(40 - int(2 * HOLD)))
    assert all(at == step + 2 * HOLD for _, step, at in written)


# ------------------------------------------------ what a node call reveals of a fault
def _call(buffer: str, node: str, sent_at: float, attempt: int = 1,
          restarted: bool = False) -> NodeCall:
    batch = Batch("w", 1, ("", 0), attempt=attempt)
    return NodeCall(buffer, 1, [batch], ray_node=node, restarted=restarted, sent_at=sent_at)


def test_a_node_call_reveals_resends_restarts_and_stalls_but_not_clock_skew() -> None:
    watch = FaultWatch(own_node="hub-node")
    assert not watch.before(_call("a", "hub-node", 10.0), now=10.2)
    assert watch.before(_call("a", "hub-node", 11.0), now=13.0)  # queued 2 s at the hub
    assert watch.before(_call("a", "hub-node", 14.0, attempt=2), now=14.0)  # a resend
    assert watch.before(_call("b", "hub-node", 15.0), now=15.0)  # a new node buffer
    assert not watch.before(_call("b", "hub-node", 16.0), now=16.0)
    assert watch.before(_call("c", "other", 20.0, restarted=True), now=50.0)  # Ray restarted it
    # another node's clock is 30 s behind: only a delay beyond its usual one is a stall
    assert not watch.before(_call("c", "other", 21.0), now=51.1)
    assert watch.before(_call("c", "other", 22.0), now=54.0)
    assert not watch.before(_call("d", "new-node", 1.0), now=100.0)  # a first node buffer
    assert FaultWatch.after([], took_s=2.0)  # calls queued behind a slow one
    assert not FaultWatch.after([Ack("w", 1)], took_s=0.1)
    assert FaultWatch.after([Ack("w", 1, error="disk full")], took_s=0.1)


# --------------------------- a group of short-lived clients (a new client per round, plain tasks)
def _rounds(book: SummaryBook, rounds: int, per_round: int, every: float) -> list[float]:
    """``per_round`` new clients of group task summarise step ``r`` at ``r * every``."""
    times = [r * every for r in range(rounds)]
    for r, t in enumerate(times):
        for k in range(per_round):
            book.add(_partial(f"task/r{r}-{k}", r, 1.0, group="task"), now=t)
    return times


def test_a_quiet_group_of_short_lived_clients_is_written_within_the_silence_bound() -> None:
    book = SummaryBook(DELAY, SILENT, hold_s=HOLD)
    quiet_at = _rounds(book, rounds=5, per_round=3, every=1.0)[-1]
    written: dict[int, float] = {}
    now = quiet_at
    while now < quiet_at + 20 * SILENT and len(written) < 5:
        for summary in book.due(now):
            assert summary.step not in written and summary.values["r/count"] == 3.0
            written[summary.step] = now
        now += 0.1
    assert sorted(written) == list(range(5))
    # the silence bound, or the bounded join hold after the step's first partial if longer
    assert max(written.values()) <= quiet_at + max(SILENT, 2 * HOLD) + 0.1


def test_a_fault_restarts_the_quiet_time_of_a_group_that_went_quiet() -> None:
    book = _b_behind_a(a_step_1_at=1.0)
    book.disturbed(now=30.0)  # the hub was stalled from t=1 and noticed when it resumed
    assert book.silent_clients(now=30.0 + SILENT - 0.1) == []  # b's step 1 may be on its way
    assert book.silent_clients(now=30.0 + SILENT) == ["agent/a", "agent/b"]


def test_a_flush_writes_the_steps_of_replaced_clients_but_waits_for_a_live_one() -> None:
    book = SummaryBook(DELAY, SILENT, hold_s=HOLD)
    _rounds(book, rounds=3, per_round=2, every=0.1)
    book.add(_partial("agent/a", 0, 1.0), now=0.0)
    book.add(_partial("agent/b", 0, 1.0), now=0.0)
    book.add(_partial("agent/a", 1, 1.0), now=0.2)  # b, long-lived, is a step behind
    assert _steps(book.due(now=0.3, quiet=False)) == [
        ("agent", 0, 2.0), ("task", 0, 2.0), ("task", 1, 2.0), ("task", 2, 2.0)]
    book.add(_partial("agent/b", 1, 1.0), now=0.4)
    assert _steps(book.due(now=0.5, quiet=False)) == [("agent", 1, 2.0)]  # one point, both


def test_the_hold_is_a_setting_of_its_own_and_defaults_to_the_longest_back_off_and_two_flushes(
        monkeypatch) -> None:
    from rayplex.config import Config, _from_env

    assert Config(retry_max_backoff_s=5.0, flush_interval_s=0.2).effective_summary_hold_s == 5.4
    monkeypatch.setenv("RAYPLEX_RETRY_MAX_BACKOFF_S", "1")
    monkeypatch.setenv("RAYPLEX_FLUSH_INTERVAL_S", "0.2")
    monkeypatch.setenv("RAYPLEX_SUMMARY_HOLD_S", "5.4")
    cfg = _from_env()  # senders retry within 1 s; the hub still holds for 5.4 s
    assert (cfg.retry_max_backoff_s, cfg.effective_summary_hold_s) == (1.0, 5.4)
    monkeypatch.delenv("RAYPLEX_SUMMARY_HOLD_S")
    assert _from_env().effective_summary_hold_s == 1.4
