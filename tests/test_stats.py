"""Bootstrap intervals of the two-hop study (jaxkn.experiments.stats)."""

import numpy as np
import pytest

from jaxkn.experiments.stats import (
    TOO_FEW,
    bootstrap,
    cluster_bootstrap,
    cluster_mean_ci,
    cluster_paired_difference_ci,
    conditional_share_ci,
    conditional_share_wilson,
    fact_clusters,
    mean_ci,
    paired_difference_ci,
    share_ci,
    share_wilson,
    wilson_share,
)


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


# ---- Wilson shares and the cluster bootstrap ---------------------------------------------------------

def test_wilson_share_of_zero_of_five():
    share = wilson_share(0, 5)
    assert (share.estimate, share.low) == (0.0, 0.0) and share.high == pytest.approx(0.434, abs=5e-4)
    assert share.too_few and share.label == TOO_FEW and share.as_dict()["label"] == "too few to tell"
    assert share.text() == "0/5: 0.0% [0.0%, 43.4%] (too few to tell)"
    # the percentile bootstrap of the same sample says [0, 0]
    assert share_ci(np.zeros(5, bool), n_boot=200)[1:3] == (0.0, 0.0)


def test_too_few_below_ten_and_the_formula():
    assert wilson_share(3, 9).too_few and not wilson_share(3, 10).too_few and wilson_share(3, 10).label == ""
    k, n, z = 7, 20, 1.959963984540054
    centre, half = (k + z * z / 2) / (n + z * z), z / (n + z * z) * np.sqrt(k * (n - k) / n + z * z / 4)
    got = wilson_share(k, n)
    assert got.low == pytest.approx(centre - half) and got.high == pytest.approx(centre + half)
    empty = wilson_share(0, 0)
    assert empty.too_few and empty.as_dict()["estimate"] is None and "n/a" in empty.text()
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_share(6, 5)


def test_wilson_shares_count_the_real_denominator():
    assert share_wilson([1.0, 0.0, np.nan, 1.0])[3:5] == (2, 3)  # undefined entries are not counted
    event = np.array([1, 1, 0, 0, 1, 0], bool)
    given = np.array([1, 1, 1, 0, 0, 0], bool)
    share = conditional_share_wilson(event, given)
    assert (share.k, share.n, share.estimate) == (2, 3, pytest.approx(2 / 3))


def test_fact_clusters_join_items_through_shared_facts():
    items = [("f1", "f2"), ("f3", "f2"), ("f4", "f5"), ("f5", "f6"), ("f7", "f8"), ("f6", "f9")]
    np.testing.assert_array_equal(fact_clusters(items), [0, 0, 2, 2, 4, 2])


def test_cluster_bootstrap_resamples_whole_clusters():
    # cluster A holds two items of value 1, cluster B one of value 3: a resample is AA, AB, BA or BB, so its mean
    # is 1, 5/3 or 3 (an item bootstrap would also give e.g. 7/3 from rows 1, 3, 3)
    seen = []

    def mean(c):
        seen.append(c["x"].copy())
        return float(np.mean(c["x"]))

    ci = cluster_bootstrap({"x": np.array([1.0, 1.0, 3.0])}, ["A", "A", "B"], mean, n_boot=2000, seed=1)
    assert ci.estimate == pytest.approx(5 / 3) and (ci.n, ci.clusters, ci.resamples) == (3, 2, 2000)
    resampled = seen[1:]
    assert all(np.sum(x == 1.0) % 2 == 0 for x in resampled)  # A's two rows always travel together
    means = np.array([x.mean() for x in resampled])
    assert set(np.round(means, 6)) == {1.0, round(5 / 3, 6), 3.0}
    assert np.mean(means == 1.0) == pytest.approx(0.25, abs=0.03)
    assert (ci.low, ci.high) == (1.0, 3.0)


def test_cluster_bootstrap_drops_undefined_resamples_and_counts_them():
    given = np.array([False, False, True])  # only cluster B has an item in the condition
    event = np.array([False, False, True])

    def share(c):
        return float(c["event"][c["given"]].mean()) if c["given"].any() else np.nan

    ci = cluster_bootstrap({"event": event, "given": given}, [0, 0, 1], share, n_boot=500, seed=2)
    draws = np.random.default_rng(2).integers(0, 2, size=(500, 2))
    assert ci.resamples == int(np.sum((draws == 1).any(axis=1))) and 300 < ci.resamples < 500


def test_cluster_mean_and_paired_difference():
    after = np.array([2.0, 3.0, np.nan, 5.0, 4.0])
    before = np.array([1.0, 1.0, 1.0, np.nan, 1.0])
    ci = cluster_paired_difference_ci(after, before, [0, 0, 1, 1, 2], n_boot=200)
    assert ci.estimate == pytest.approx(2.0) and (ci.n, ci.clusters) == (3, 2)
    single = cluster_mean_ci(np.arange(6.0), np.arange(6), n_boot=300, seed=4)  # one item per cluster
    assert (single.low, single.high) == mean_ci(np.arange(6.0), n_boot=300, seed=4)[1:3]
    assert single.as_dict()["clusters"] == 6 and cluster_mean_ci([], [], n_boot=10).n == 0
    with pytest.raises(ValueError, match="differ in length"):
        cluster_bootstrap({"x": np.ones(3)}, [0, 1], lambda c: 0.0)
