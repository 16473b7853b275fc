"""Tests for rayplex.stats: exact mergeable moments, quantile sketch, MetricsWindow."""

from __future__ import annotations

import base64
import json
import math
import pickle
import zlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayplex.stats import (
    DEFAULT_STATS,
    SUPPORTED_STATS,
    MetricsWindow,
    PartialStats,
)

A = PartialStats.RELATIVE_ACCURACY
EPS = np.finfo(np.float64).eps

settings.register_profile("rayplex-stats", max_examples=200, deadline=None)
settings.load_profile("rayplex-stats")

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
values_lists = st.lists(finite, min_size=1, max_size=600)
# Magnitudes within the sketch's uncollapsed span (MAX_BUCKETS buckets ~ 17.8 decades per sign).
sketchable = st.one_of(
    st.just(0.0), st.floats(1e-4, 1e12), st.floats(-1e12, -1e-4), st.integers(-50, 50).map(float)
)
sketchable_lists = st.lists(sketchable, min_size=1, max_size=600)


@st.composite
def offset_noise_lists(draw: st.DrawFn) -> list[float]:
    """Large magnitudes with small noise: 1e8 +- a little, where sum-of-squares breaks."""
    offset = draw(st.sampled_from([1e8, -1e8, 1e9, 3.5e7]))
    noise = draw(st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=600))
    return [offset + n for n in noise]


@st.composite
def split_points(draw: st.DrawFn, n: int) -> list[int]:
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    return sorted(cuts)


def build(values: list[float] | np.ndarray, one_by_one: bool) -> PartialStats:
    part = PartialStats()
    if one_by_one:
        for v in values:
            part.add(v)
    else:
        part.add_many(values)
    return part


def assert_moments_match_numpy(part: PartialStats, values: np.ndarray) -> None:
    """count exact; min/max exact; mean/std to rtol 1e-9 plus an absolute term that is
    a small multiple of the rounding unit of the inputs (eps * max|x|)."""
    scale = float(np.max(np.abs(values)))
    atol = 64 * EPS * scale
    assert part.count == values.size
    assert part.min == values.min()
    assert part.max == values.max()
    assert part.mean == pytest.approx(float(values.mean()), rel=1e-9, abs=atol)
    assert part.std == pytest.approx(float(values.std()), rel=1e-9, abs=atol)


@st.composite
def split_data(
    draw: st.DrawFn, data: st.SearchStrategy[list[float]] = values_lists
) -> tuple[np.ndarray, list[PartialStats]]:
    values = draw(data)
    cuts = draw(split_points(len(values)))
    bounds = [0, *cuts, len(values)]
    parts = [
        build(values[lo:hi], draw(st.booleans()))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return np.asarray(values, dtype=np.float64), parts


# --------------------------------------------------------------------------- moments


@given(split_data())
def test_merging_any_split_equals_numpy_on_the_union(
    case: tuple[np.ndarray, list[PartialStats]],
) -> None:
    values, parts = case
    assert_moments_match_numpy(PartialStats.merged(parts), values)


@given(split_data(), st.randoms(use_true_random=False))
def test_merge_order_and_tree_shape_do_not_matter(
    case: tuple[np.ndarray, list[PartialStats]], rnd: object
) -> None:
    values, parts = case
    pool = [p.copy() for p in parts]
    while len(pool) > 1:  # random pairwise tree, like worker -> node -> hub
        rnd.shuffle(pool)  # type: ignore[attr-defined]
        a, b = pool.pop(), pool.pop()
        pool.append(a.merge(b))
    assert_moments_match_numpy(pool[0], values)


@given(split_data(offset_noise_lists()))
def test_large_offsets_with_small_noise_keep_the_std_accurate(
    case: tuple[np.ndarray, list[PartialStats]],
) -> None:
    values, parts = case
    merged = PartialStats.merged(parts)
    assert_moments_match_numpy(merged, values)
    # Much tighter than what a sum-of-squares implementation achieves (error ~ 1).
    assert abs(merged.std - values.std()) < 1e-5


def test_the_classic_catastrophic_cancellation_example_is_exact() -> None:
    values = 1e9 + np.array([4.0, 7.0, 13.0, 16.0] * 300)
    parts = [PartialStats(values[i::7]) for i in range(7)]
    merged = PartialStats.merged(parts)
    assert merged.mean == pytest.approx(1e9 + 10.0, rel=1e-15)
    assert merged.std == pytest.approx(math.sqrt(22.5), rel=1e-9)


@given(values_lists)
def test_adding_one_at_a_time_matches_add_many(values: list[float]) -> None:
    one, many = build(values, True), build(values, False)
    assert one.count == many.count
    assert one.min == many.min and one.max == many.max
    assert one.mean == pytest.approx(many.mean, rel=1e-9, abs=64 * EPS * max(map(abs, values)))
    assert one.std == pytest.approx(many.std, rel=1e-9, abs=64 * EPS * max(map(abs, values)))
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0):
        assert one.quantile(q) == many.quantile(q)


def test_a_single_value_has_zero_std_and_is_every_quantile() -> None:
    part = PartialStats([-3.25])
    assert part.summary(("mean", "std", "min", "max", "count", "p50", "p99")) == {
        "mean": -3.25,
        "std": 0.0,
        "min": -3.25,
        "max": -3.25,
        "count": 1.0,
        "p50": -3.25,
        "p99": -3.25,
    }


def test_an_empty_partial_reports_zero_count_and_nan_values() -> None:
    part = PartialStats()
    summary = part.summary(("mean", "std", "min", "max", "count", "p50"))
    assert summary["count"] == 0.0
    assert all(math.isnan(summary[k]) for k in ("mean", "std", "min", "max", "p50"))
    assert "nan_count" not in summary


def test_merging_with_an_empty_partial_changes_nothing() -> None:
    part = PartialStats([1.0, 2.0, 4.0])
    before = part.summary(SUPPORTED_STATS)
    assert part.merge(PartialStats()).summary(SUPPORTED_STATS) == before
    assert PartialStats().merge(part).summary(SUPPORTED_STATS) == before


def test_merging_a_partial_with_itself_doubles_its_data() -> None:
    part = PartialStats([1.0, 2.0, 6.0])
    part.add(7.0)  # staged, not yet folded
    part.merge(part)
    assert_moments_match_numpy(part, np.array([1.0, 2.0, 6.0, 7.0] * 2))


def test_merge_leaves_the_other_partial_unchanged() -> None:
    a, b = PartialStats([1.0, 2.0]), PartialStats()
    b.add(10.0)
    before = b.summary(SUPPORTED_STATS)
    a.merge(b)
    assert b.summary(SUPPORTED_STATS) == before
    assert a.count == 3


def test_merging_a_non_partial_raises_type_error() -> None:
    with pytest.raises(TypeError, match="PartialStats"):
        PartialStats().merge([1.0])  # type: ignore[arg-type]


def test_merging_sketches_of_different_accuracy_raises_value_error() -> None:
    class Coarse(PartialStats):
        RELATIVE_ACCURACY = 0.05

    with pytest.raises(ValueError, match="RELATIVE_ACCURACY"):
        PartialStats([1.0]).merge(Coarse([1.0]))


def test_the_staging_buffer_stays_bounded() -> None:
    part = PartialStats()
    for i in range(10 * PartialStats.BUFFER_SIZE + 3):
        part.add(float(i))
        assert len(part._buf) < PartialStats.BUFFER_SIZE
    assert part.count == 10 * PartialStats.BUFFER_SIZE + 3


# ------------------------------------------------------------------------- quantiles


def assert_within_sketch_bound(estimate: float, values: np.ndarray, q: float) -> None:
    """The sketch targets numpy's "lower" order statistic within a relative A; allow
    the bracket [lower, higher] to absorb float rounding of q * (n - 1)."""
    lo = float(np.quantile(values, q, method="lower"))
    hi = float(np.quantile(values, q, method="higher"))
    slack = A * (1 + 1e-9)
    assert lo - slack * abs(lo) <= estimate <= hi + slack * abs(hi), (estimate, lo, hi)


@given(split_data(sketchable_lists), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
def test_quantiles_are_within_the_relative_accuracy_of_numpy(
    case: tuple[np.ndarray, list[PartialStats]], qs: list[float]
) -> None:
    values, parts = case
    merged = PartialStats.merged(parts)
    for q in [*qs, 0.5, 0.9, 0.99]:
        assert_within_sketch_bound(merged.quantile(q), values, q)


@given(
    st.lists(st.integers(-20, 20), min_size=1, max_size=400),
    st.integers(0, 100),
)
def test_quantiles_track_the_lower_order_statistic_when_the_rank_is_exact(
    exponents: list[int], pct: int
) -> None:
    # Spread over many decades, with zeros and both signs; rank q*(n-1) exactly integral.
    values = np.array([0.0 if e == 0 else math.copysign(1.7 ** abs(e), e) for e in exponents])
    n = values.size
    rank = (pct * (n - 1)) // 100
    q = rank / (n - 1) if n > 1 else pct / 100
    target = np.sort(values)[math.floor(q * (n - 1))]
    assert abs(PartialStats(values).quantile(q) - target) <= A * (1 + 1e-9) * abs(target)


@given(split_data())
def test_merged_sketches_equal_the_sketch_of_the_union(
    case: tuple[np.ndarray, list[PartialStats]],
) -> None:
    values, parts = case
    merged, whole = PartialStats.merged(parts), PartialStats(values)
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert merged.quantile(q) == whole.quantile(q)


def test_quantiles_of_zero_and_one_are_the_exact_min_and_max() -> None:
    values = np.random.default_rng(1).normal(size=1000)
    part = PartialStats(values)
    assert part.quantile(0) == values.min()
    assert part.quantile(1) == values.max()


@pytest.mark.parametrize("q", [-0.1, 1.5, math.nan])
def test_quantile_outside_zero_one_raises_value_error(q: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PartialStats([1.0]).quantile(q)


def test_the_number_of_buckets_stays_bounded_and_high_quantiles_stay_accurate() -> None:
    values = np.logspace(-60, 60, 20001)  # 120 decades, far beyond MAX_BUCKETS buckets
    part = PartialStats()
    for chunk in np.array_split(values, 7):  # also exercises collapsing while merging
        part.merge(PartialStats(np.concatenate([chunk, -chunk])))
    assert part._pos.counts.size <= PartialStats.MAX_BUCKETS
    assert part._neg.counts.size <= PartialStats.MAX_BUCKETS
    both = np.concatenate([values, -values])
    assert part.count == both.size
    # Only the lowest magnitudes are collapsed: the top ~17.8 decades (|x| > 1e42) stay
    # accurate, i.e. quantiles q <= 0.075 (negative side) and q >= 0.925 (positive side).
    for q in (0.001, 0.01, 0.05, 0.95, 0.99, 0.999):
        assert_within_sketch_bound(part.quantile(q), both, q)
    assert -1e60 <= part.quantile(0.5) <= 1e60
    assert len(pickle.dumps(part)) < 20_000


# ----------------------------------------------------------------------- NaN and inf


def test_nan_values_are_counted_and_otherwise_ignored() -> None:
    part = PartialStats()
    for v in (1.0, math.nan, 3.0):
        part.add(v)
    part.add_many([math.nan, np.nan, 5.0])
    assert part.count == 3
    assert part.nan_count == 3
    assert part.summary(("mean", "max")) == {"mean": 3.0, "max": 5.0, "nan_count": 3.0}
    assert part.quantile(0.5) == pytest.approx(3.0, rel=A)


def test_nan_count_is_reported_only_when_nans_were_seen() -> None:
    assert "nan_count" not in PartialStats([1.0]).summary(("mean", "nan_count"))
    assert PartialStats([1.0, math.nan]).summary(("mean",))["nan_count"] == 1.0


def test_nan_counts_add_up_when_merging() -> None:
    merged = PartialStats.merged([PartialStats([math.nan, 1.0]), PartialStats([math.nan] * 4)])
    assert (merged.nan_count, merged.count, merged.mean) == (5, 1, 1.0)


def test_an_all_nan_partial_has_zero_count_and_nan_moments() -> None:
    summary = PartialStats([math.nan, math.nan]).summary(DEFAULT_STATS)
    assert summary["count"] == 0.0 and summary["nan_count"] == 2.0
    assert math.isnan(summary["mean"]) and math.isnan(summary["std"])


@pytest.mark.parametrize(
    "values",
    [
        [1.0, math.inf, 2.0],
        [1.0, -math.inf],
        [math.inf, -math.inf, 0.5],
        [math.inf],
        [-math.inf, -math.inf, 7.0, math.nan],
    ],
)
def test_infinities_are_counted_and_behave_like_numpy(values: list[float]) -> None:
    arr = np.array(values)
    finite_or_inf = arr[~np.isnan(arr)]
    parts = [PartialStats(values[:1]), PartialStats(values[1:])]
    merged = PartialStats.merged(parts)
    with np.errstate(invalid="ignore"):
        expected = (finite_or_inf.size, finite_or_inf.mean(), finite_or_inf.std())
    np.testing.assert_equal((merged.count, merged.mean, merged.std), expected)
    assert merged.min == finite_or_inf.min() and merged.max == finite_or_inf.max()
    for q in (0.0, 0.5, 1.0):
        exact = float(np.quantile(finite_or_inf, q, method="lower"))
        est = merged.quantile(q)
        assert est == exact if math.isinf(exact) else abs(est - exact) <= A * abs(exact)


def test_infinities_do_not_poison_the_moments_of_later_finite_data() -> None:
    part = PartialStats([math.inf, -math.inf])
    part.merge(PartialStats([1.0, 2.0, 3.0]))
    assert math.isnan(part.mean)
    assert part.count == 5
    assert part.quantile(0.5) == pytest.approx(2.0, rel=A)


# ------------------------------------------------------------------ summary and names


def test_default_summary_has_the_default_stats_as_floats() -> None:
    summary = PartialStats([1.0, 2.0, 3.0, 4.0]).summary()
    assert list(summary) == list(DEFAULT_STATS)
    assert summary == pytest.approx(
        {"mean": 2.5, "std": math.sqrt(1.25), "min": 1.0, "max": 4.0, "count": 4.0}
    )
    assert all(type(v) is float for v in summary.values())


def test_all_supported_stats_and_arbitrary_percentiles_can_be_requested() -> None:
    values = np.arange(1.0, 1001.0)
    summary = PartialStats(values).summary((*SUPPORTED_STATS, "p5", "p99.9", "p01"))
    assert set(summary) == (set(SUPPORTED_STATS) - {"nan_count"}) | {"p5", "p99.9", "p01"}
    for name, q in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p5", 0.05), ("p99.9", 0.999)]:
        assert_within_sketch_bound(summary[name], values, q)


def test_a_single_stat_name_may_be_given_as_a_string() -> None:
    assert PartialStats([2.0]).summary("max") == {"max": 2.0}


@pytest.mark.parametrize("bad", ["median", "p0", "p100", "p-5", "p", "P50", "Mean", "p50x", 3])
def test_bad_stat_names_raise_value_error_naming_the_valid_ones(bad: object) -> None:
    with pytest.raises(ValueError, match=r"unknown statistic.*mean, std, min, max.*pNN"):
        PartialStats([1.0]).summary(["mean", bad])  # type: ignore[list-item]


def test_bad_stat_names_raise_even_for_an_empty_partial() -> None:
    with pytest.raises(ValueError):
        PartialStats().summary(("avg",))


# ------------------------------------------------------------------- serialisation


@given(split_data(), st.booleans())
def test_pickle_round_trip_preserves_every_statistic(
    case: tuple[np.ndarray, list[PartialStats]], with_nan: bool
) -> None:
    _, parts = case
    part = PartialStats.merged(parts)
    if with_nan:
        part.add(math.nan)
    part.add(0.0)  # leave something in the staging buffer
    clone = pickle.loads(pickle.dumps(part))
    assert clone.summary(SUPPORTED_STATS) == part.summary(SUPPORTED_STATS)
    assert clone.quantile(0.37) == part.quantile(0.37)
    clone.add(1.0)  # the clone is fully functional
    assert clone.count == part.count + 1


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.normal(size=1_000_000),
        lambda rng: rng.uniform(0, 500, size=1_000_000),
        lambda rng: rng.lognormal(0, 3, size=1_000_000),
        lambda rng: rng.integers(0, 1000, size=1_000_000).astype(float),
    ],
    ids=["normal", "uniform", "lognormal", "integers"],
)
def test_a_partial_that_saw_a_million_values_pickles_to_a_few_kb(make: object) -> None:
    values = make(np.random.default_rng(0))  # type: ignore[operator]
    part = PartialStats(values)
    assert len(pickle.dumps(part)) <= 4096
    assert_moments_match_numpy(pickle.loads(pickle.dumps(part)), values)


def _state(part: PartialStats) -> tuple[object, ...]:
    return part.__getstate__()


@given(split_data(), st.booleans(), st.lists(st.sampled_from([math.inf, -math.inf, 0.0])))
def test_to_json_is_strict_json_and_round_trips_the_state_exactly(
    case: tuple[np.ndarray, list[PartialStats]], with_nan: bool, extra: list[float]
) -> None:
    _, parts = case
    part = PartialStats.merged(parts)
    part.add_many(extra)
    if with_nan:
        part.add(math.nan)
    text = json.dumps(part.to_json(), allow_nan=False)
    clone = PartialStats.from_json(json.loads(text))
    assert _state(clone) == _state(part)
    assert _state(PartialStats.from_json(clone.to_json())) == _state(part)


@given(split_data(), split_data())
def test_merging_after_a_json_round_trip_gives_identical_summaries(
    a: tuple[np.ndarray, list[PartialStats]], b: tuple[np.ndarray, list[PartialStats]]
) -> None:
    left, right = PartialStats.merged(a[1]), PartialStats.merged(b[1])
    direct = left.copy().merge(right)
    via_json = PartialStats.from_json(json.loads(json.dumps(left.to_json()))).merge(
        PartialStats.from_json(json.loads(json.dumps(right.to_json()))))
    assert _state(via_json) == _state(direct)
    stats = (*SUPPORTED_STATS, "p5", "p99.9")
    np.testing.assert_equal(via_json.summary(stats), direct.summary(stats))


def test_an_empty_partial_round_trips_through_json() -> None:
    clone = PartialStats.from_json(json.loads(json.dumps(PartialStats().to_json())))
    assert _state(clone) == _state(PartialStats())


def test_a_million_values_stay_a_few_kb_of_json() -> None:
    part = PartialStats(np.random.default_rng(0).lognormal(0, 3, size=1_000_000))
    assert len(json.dumps(part.to_json())) <= 8192


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda d: "not an object",
        lambda d: {**d, "v": 99},
        lambda d: {**d, "a": 0.02},
        lambda d: {**d, "n": -1},
        lambda d: {**d, "nan": True},
        lambda d: {**d, "min": "Infinity!"},
        lambda d: {**d, "pos": [0, "<f8", ""]},
        lambda d: {**d, "pos": [0, "<u1", "!!not base64"]},
        lambda d: {**d, "pos": [0, "<u8", base64.b64encode(zlib.compress(bytes(10**6))).decode()]},
        lambda d: {**d, "zero": d["zero"] + 1},
    ],
)
def test_from_json_refuses_malformed_input_with_value_error(corrupt: object) -> None:
    data = PartialStats([-1.0, 0.0, 2.0, 3.0]).to_json()
    with pytest.raises(ValueError, match="PartialStats JSON"):
        PartialStats.from_json(corrupt(data))  # type: ignore[operator]


def test_from_json_rejects_a_different_relative_accuracy() -> None:
    data = PartialStats([1.0]).to_json()
    data["a"] = 0.02
    with pytest.raises(ValueError, match="relative accuracy"):
        PartialStats.from_json(data)


# ----------------------------------------------------------------------- ingestion


@pytest.mark.parametrize(
    "value",
    [3, True, np.float32(3.0), np.int64(3), np.array(3.0), Fraction(3, 1)],
)
def test_add_accepts_any_real_number(value: object) -> None:
    part = PartialStats()
    part.add(value)  # type: ignore[arg-type]
    assert part.summary(("count", "mean")) == {"count": 1.0, "mean": float(value)}  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1.5", None, 1j, [1.0], object(), b"1"])
def test_add_rejects_non_numbers_with_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        PartialStats().add(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("values", [["1.0"], [None], [1j], [[1.0], [2.0, 3.0]]])
def test_add_many_rejects_non_numeric_arrays_with_type_error(values: object) -> None:
    with pytest.raises(TypeError):
        PartialStats().add_many(values)  # type: ignore[arg-type]


def test_add_many_accepts_generators_and_arrays_of_any_shape() -> None:
    part = PartialStats()
    part.add_many(float(i) for i in range(3))
    part.add_many(np.ones((2, 2), dtype=np.int32))
    assert (part.count, part.max) == (7, 2.0)


# ---------------------------------------------------------------------- MetricsWindow


def test_store_accepts_a_mapping_keywords_scalars_and_lists() -> None:
    window = MetricsWindow()
    window.store({"reward": 1.0, "done": True}, length=200)
    window.store(reward=[2.0, 3.0], length=np.int64(100), loss=np.array([[0.5], [1.5]]))
    window.store(metrics=4.0)  # "metrics" is an ordinary key when given as a keyword
    parts = window.take()
    assert sorted(parts) == ["done", "length", "loss", "metrics", "reward"]
    assert parts["reward"].summary(("mean", "count")) == {"mean": 2.0, "count": 3.0}
    assert parts["length"].mean == 150.0
    assert parts["loss"].count == 2
    assert parts["done"].mean == 1.0


def test_take_returns_the_window_and_resets_it() -> None:
    window = MetricsWindow()
    window.store(x=1.0)
    first = window.take()
    assert first["x"].count == 1
    assert len(window) == 0 and window.take() == {}
    window.store(x=2.0)
    assert window.take()["x"].mean == 2.0
    assert first["x"].mean == 1.0


@pytest.mark.parametrize(
    ("value", "type_name"),
    [("fast", "str"), (1 + 2j, "complex"), ({"a": 1}, "dict"), (["a"], "list"),
     ([[1.0], ["a"]], "list")],
)
def test_store_raises_type_error_naming_the_key_and_the_type(value: object, type_name: str) -> None:
    window = MetricsWindow()
    with pytest.raises(TypeError, match=rf"'speed'.*{type_name}"):
        window.store(ok=1.0, speed=value)
    assert len(window) == 0  # nothing from the failed call was stored


@pytest.mark.parametrize("key", [3, None, b"reward"])
def test_store_rejects_keys_that_are_not_strings(key: object) -> None:
    with pytest.raises(TypeError, match="store_metrics key"):
        MetricsWindow().store({key: 1.0})  # type: ignore[dict-item]


@pytest.mark.parametrize("key", ["", "a\x00b", "two\nlines", "cr\r", "k" * 5000])
def test_store_rejects_keys_that_cannot_become_tags_and_stores_nothing(key: str) -> None:
    window = MetricsWindow()
    with pytest.raises(ValueError, match="store_metrics key"):
        window.store({"good": 1.0, key: 2.0})
    assert len(window) == 0


def test_a_refused_key_leaves_the_values_stored_before_it_intact() -> None:
    window = MetricsWindow()
    window.store(reward=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NUL"):
        window.store({"reward": 100.0, "bad\x00key": 1.0})
    parts = window.take()
    assert sorted(parts) == ["reward"]
    assert parts["reward"].summary(("mean", "count", "max")) == {
        "mean": 2.0, "count": 3.0, "max": 3.0}


def test_store_rejects_a_key_given_twice() -> None:
    with pytest.raises(ValueError, match="both"):
        MetricsWindow().store({"x": 1.0}, x=2.0)


def test_store_rejects_a_non_mapping_positional_argument() -> None:
    with pytest.raises(TypeError, match="mapping"):
        MetricsWindow().store([("x", 1.0)])  # type: ignore[arg-type]


def test_store_flattens_nested_and_ragged_lists_and_arrays_as_ml_logger_does() -> None:
    window = MetricsWindow()
    window.store(x=[[0], [1, 2], np.array([10, 1]), [np.array([10]), np.array([1, 2])]])
    part = window.take()["x"]
    assert part.summary(("count", "mean", "min", "max")) == {
        "count": 8.0, "mean": 27 / 8, "min": 0.0, "max": 10.0}


def test_store_counts_none_as_nan_alone_in_lists_and_in_arrays() -> None:
    window = MetricsWindow()
    window.store(alone=None, listed=[1.0, None, 3.0],
                 nested=[[0], np.array([None, 1]), [np.array([10])]],
                 with_nan=[[0], np.array([np.nan, 1]), [np.array([10])]])
    parts = window.take()
    assert parts["with_nan"].summary(("count",)) == {"count": 3.0, "nan_count": 1.0}
    assert parts["alone"].summary(("count",)) == {"count": 0.0, "nan_count": 1.0}
    assert parts["listed"].summary(("count", "mean")) == {
        "count": 2.0, "mean": 2.0, "nan_count": 1.0}
    assert parts["nested"].summary(("count", "max")) == {
        "count": 3.0, "max": 10.0, "nan_count": 1.0}


def test_pop_takes_one_key_out_of_the_window() -> None:
    window = MetricsWindow()
    window.store(reward=[1.0, 3.0], length=5)
    popped = window.pop("reward")
    assert popped.mean == 2.0 and popped.count == 2
    assert "reward" not in window and "length" in window
    assert window.pop("reward") is None
    assert window.pop("reward", "absent") == "absent"


def test_storing_an_empty_list_is_a_no_op() -> None:
    window = MetricsWindow()
    window.store(x=[])
    assert "x" not in window


def test_table_lists_every_key_with_its_statistics() -> None:
    window = MetricsWindow()
    assert window.table() == "(no metrics stored)"
    window.store(reward=[1.0, 3.0], length=200)
    lines = window.table().splitlines()
    assert lines[0].split() == ["key", "count", "mean", "std", "min", "max"]
    assert lines[2].split() == ["length", "1", "200", "0", "200", "200"]
    assert lines[3].split() == ["reward", "2", "2", "1", "1", "3"]
    window.store(reward=math.nan)
    assert window.table().splitlines()[0].split()[-1] == "nans"
