"""Tests for rayplex.timers: ML-Logger's start/split/since, every/count/clear and the windows
behind ``with logger.time(...)``, as plain objects driven by a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from rayplex.timers import Counters, TimedBlocks, Timers


def clock(*readings: float) -> Callable[[], float]:
    ticks: Iterator[float] = iter(readings)
    return lambda: next(ticks)


# ----------------------------------------------------------------------------------- Timers


def test_the_first_split_is_none_and_later_splits_are_seconds_since_the_previous_one() -> None:
    timers = Timers(clock(1.0, 1.5, 4.0))
    assert timers.split() is None
    assert timers.split() == 0.5
    assert timers.split() == 2.5


def test_split_with_the_real_clock_returns_a_float_after_the_first_call() -> None:
    timers = Timers()
    assert timers.split("x") is None
    delta = timers.split("x")
    assert isinstance(delta, float) and delta >= 0.0


def test_start_returns_the_clock_reading_and_split_measures_from_it() -> None:
    timers = Timers(clock(10.0, 12.0))
    assert timers.start() == 10.0
    assert timers.split() == 2.0


def test_since_reads_without_restarting_the_timer() -> None:
    timers = Timers(clock(0.0, 1.0, 3.0, 4.0))
    timers.start("run")
    assert timers.since("run") == 1.0
    assert timers.since("run") == 3.0
    assert timers.split("run") == 4.0


def test_since_on_a_timer_never_started_starts_it_and_reads_none() -> None:
    timers = Timers(clock(5.0, 7.0))
    assert timers.since("fresh") is None
    assert timers.since("fresh") == 2.0


def test_several_keys_give_a_list_in_order_and_a_repeated_key_the_same_value() -> None:
    timers = Timers(clock(0.0, 2.0, 3.0))
    assert timers.start("loop", "iter") == [0.0, 0.0]
    assert timers.split("iter", "iter") == [2.0, 2.0]
    assert timers.since("loop", "iter") == [3.0, 1.0]


def test_keys_are_independent() -> None:
    timers = Timers(clock(0.0, 1.0, 5.0, 6.0))
    timers.start("a")
    timers.start("b")
    assert timers.split("a") == 5.0
    assert timers.split("b") == 5.0


def test_a_timer_key_that_is_not_a_string_raises_type_error() -> None:
    with pytest.raises(TypeError, match="str"):
        Timers().start(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- Counters


def test_every_fires_on_each_nth_call() -> None:
    counters = Counters()
    fired = [i for i in range(100) if counters.every(10)]
    assert fired == list(range(100))[9::10]


def test_every_with_start_on_one_fires_on_the_first_call_and_every_nth_after() -> None:
    counters = Counters()
    fired = [i for i in range(101) if counters.every(10, "tail", start_on=1)]
    assert fired == list(range(0, 101, 10))


def test_every_counts_each_key_apart() -> None:
    counters = Counters()
    i_sum = j_sum = 0
    for i in range(100):
        for j in range(100):
            if counters.every(5, "j"):
                j_sum += j
            if counters.every(50, "i"):
                i_sum += i
    assert i_sum == 4950 * 2
    assert j_sum == sum(range(4, 100, 5)) * 100


def test_every_none_counts_but_never_fires() -> None:
    counters = Counters()
    assert not any(counters.every(None, "k") for _ in range(5))
    assert counters.count("k") == 6


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2"])
def test_every_with_a_bad_n_raises_value_error(n: object) -> None:
    with pytest.raises(ValueError, match="every"):
        Counters().every(n)  # type: ignore[arg-type]


def test_every_with_a_negative_start_on_raises_value_error() -> None:
    with pytest.raises(ValueError, match="start_on"):
        Counters().every(2, start_on=-1)


def test_count_and_clear() -> None:
    counters = Counters()
    assert [counters.count("ep") for _ in range(3)] == [1, 2, 3]
    counters.clear("ep")
    counters.clear("never-used")
    assert counters.count("ep") == 1


# ------------------------------------------------------------------------------ TimedBlocks


def test_timed_blocks_report_every_interval_the_statistics_of_every_block_so_far() -> None:
    # ML-Logger's time(): the line shows the mean (± std) of all the key's blocks so far
    blocks = TimedBlocks()
    reports = [blocks.record("io", float(s), interval=2) for s in (1, 3, 10, 20)]
    assert reports[0] is None and reports[2] is None
    assert reports[1] is not None and reports[3] is not None
    n, stats = reports[1]
    assert (n, stats.mean, stats.count) == (2, 2.0, 2)
    n, stats = reports[3]
    assert (n, stats.mean, stats.count) == (4, 8.5, 4)
    assert stats.std == pytest.approx(float(np.std([1, 3, 10, 20])))
    n, stats = blocks.record("io", 6.0, interval=1)  # a key's interval may change, as ML-Logger
    assert (n, stats.mean, stats.count) == (5, 8.0, 5)
    assert blocks.record("other", 2.0) is not None and blocks.record("io", 1.0, 2) is not None


def test_timed_blocks_with_interval_one_report_every_block() -> None:
    blocks = TimedBlocks()
    assert [r[0] for r in (blocks.record("k", 0.1) for _ in range(3)) if r] == [1, 2, 3]


@pytest.mark.parametrize("interval", [0, None, 2.0])
def test_timed_blocks_refuse_a_bad_interval(interval: object) -> None:
    with pytest.raises(ValueError):
        TimedBlocks().record("k", 1.0, interval)  # type: ignore[arg-type]


def test_timed_blocks_refuse_a_non_finite_duration() -> None:
    with pytest.raises(ValueError, match="finite"):
        TimedBlocks().record("k", float("nan"))
