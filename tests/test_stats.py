"""Bootstrap intervals of the two-hop study (jaxkn.experiments.stats)."""

import numpy as np
import pytest

from jaxkn.experiments.stats import bootstrap, conditional_share_ci, mean_ci, paired_difference_ci, share_ci


def test_constant_sample_has_a_point_interval():
    ci = mean_ci(np.full(20, 0.7), n_boot=200)
    assert ci.estimate == pytest.approx(0.7) and ci.low == pytest.approx(0.7) and ci.high == pytest.approx(0.7)
    assert ci.n == 20 and ci.resamples == 200


def test_interval_is_seeded_and_brackets_the_estimate():
    x = np.random.default_rng(1).normal(1.0, 2.0, size=200)
    a, b = mean_ci(x, n_boot=500, seed=3), mean_ci(x, n_boot=500, seed=3)
    assert a == b
    assert a.low < a.estimate < a.high
    # the percentile interval's width is close to the normal one: 2 * 1.96 * sd / sqrt(n)
    assert a.high - a.low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(len(x)), rel=0.2)


def test_coverage_of_the_mean_is_near_95_percent():
    rng = np.random.default_rng(0)
    hits = sum(lo <= 0.3 <= hi for _, lo, hi, *_ in
               (share_ci(rng.random(80) < 0.3, n_boot=300, seed=k) for k in range(100)))
    assert 85 <= hits <= 100


def test_conditional_share_counts_only_the_condition_and_can_be_undefined():
    event = np.array([1, 1, 0, 0, 1, 0], bool)
    given = np.array([1, 1, 1, 0, 0, 0], bool)
    assert conditional_share_ci(event, given, n_boot=100).estimate == pytest.approx(2 / 3)
    empty = conditional_share_ci(event, np.zeros(6, bool), n_boot=100)
    assert np.isnan(empty.estimate) and empty.as_dict()["estimate"] is None


def test_paired_difference_drops_undefined_pairs():
    after = np.array([2.0, 3.0, np.nan, 5.0])
    before = np.array([1.0, 1.0, 1.0, np.nan])
    ci = paired_difference_ci(after, before, n_boot=100)
    assert ci.estimate == pytest.approx(1.5) and ci.n == 2


def test_empty_sample_and_mismatched_columns():
    assert mean_ci([], n_boot=50).n == 0
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap({"a": np.ones(3), "b": np.ones(4)}, lambda c: 0.0)
