"""Confidence intervals for the study's headline numbers (METHOD.md §6, reporting).

- Shares: `wilson_share` / `share_wilson` / `conditional_share_wilson`: a Wilson score interval with the share's
  real denominator (0 of 5 -> [0, 0.434]; a percentile bootstrap of 0 of 5 gives [0, 0], which says nothing),
  and the label "too few to tell" below 10 (a field, `too_few`, beside the text).
- Clusters: items that share a fact are not independent. `fact_clusters` joins items that share any fact;
  `cluster_bootstrap` (`cluster_mean_ci`, `cluster_paired_difference_ci`) resamples whole clusters, drops the
  resamples where the statistic is undefined and reports how many it used, and how many clusters there were.
- The item bootstrap below (`mean_ci`, `share_ci`, `paired_difference_ci`, `conditional_share_ci`) stays as it
  was; the study reads its `Interval.as_dict()`.

Items are the unit of resampling of the item bootstrap: every statistic is a function of a table with one row per item, and a
resample draws items with replacement (so paired quantities, e.g. two-hop minus single-hop level of the same
item, stay paired). Intervals are percentile intervals at 95% by default. A statistic that is undefined on a
resample (e.g. a share of errors when the resample has no error) is dropped from that resample's count; the
number of resamples used is returned with the interval.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import numpy as np
import scipy.stats

TOO_FEW = "too few to tell"
MIN_N = 10


class Interval(NamedTuple):
    """estimate on the full sample, percentile interval [low, high], n items, resamples used."""

    estimate: float
    low: float
    high: float
    n: int
    resamples: int

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in self._asdict().items()}

    def text(self, digits: int = 3, percent: bool = False) -> str:
        """"0.412 [0.301, 0.530]" (or percentages), "n/a" when undefined."""
        if not np.isfinite(self.estimate):
            return "n/a"
        scale, unit = (100.0, "%") if percent else (1.0, "")
        fmt = lambda v: "n/a" if not np.isfinite(v) else f"{v * scale:.{digits}g}{unit}" if not percent \
            else f"{v * scale:.1f}{unit}"  # noqa: E731
        return f"{fmt(self.estimate)} [{fmt(self.low)}, {fmt(self.high)}]"


def bootstrap(columns: dict[str, np.ndarray], statistic: Callable[[dict[str, np.ndarray]], float], *,
              n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap of `statistic` over item rows.

    Args:
      columns: equal-length arrays, one entry per item (the rows resampled together).
      statistic: maps a dict of (resampled) columns to a float; NaN means undefined on that sample.
      n_boot: resamples. seed: their seed. level: the interval's coverage.
    Returns:
      `Interval` (NaN everywhere when the statistic is undefined on the full sample or no item is given).
    """
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"bootstrap columns differ in length: { {k: len(v) for k, v in arrays.items()} }")
    n = lengths.pop() if lengths else 0
    nan = float("nan")
    if n == 0:
        return Interval(nan, nan, nan, 0, 0)
    estimate = float(statistic(arrays))
    if not np.isfinite(estimate):
        return Interval(nan, nan, nan, n, 0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    values = np.array([statistic({k: v[idx] for k, v in arrays.items()}) for idx in draws], dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return Interval(estimate, nan, nan, n, 0)
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(estimate, float(low), float(high), n, int(len(values)))


def mean_ci(values, **kw) -> Interval:
    """Interval of the mean of `values` (NaN entries dropped first)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return bootstrap({"x": values}, lambda c: float(np.mean(c["x"])) if len(c["x"]) else np.nan, **kw)


def share_ci(flags, **kw) -> Interval:
    """Interval of the share of True in `flags`."""
    return mean_ci(np.asarray(flags, np.float64), **kw)


def conditional_share_ci(event, given, **kw) -> Interval:
    """Interval of P(event | given) = count(event & given) / count(given); undefined when nothing is given."""
    def stat(c):
        total = c["given"].sum()
        return float((c["event"] & c["given"]).sum() / total) if total else np.nan
    return bootstrap({"event": np.asarray(event, bool), "given": np.asarray(given, bool)}, stat, **kw)


def paired_difference_ci(after, before, **kw) -> Interval:
    """Interval of mean(after - before) over items where both are defined."""
    after, before = np.asarray(after, np.float64), np.asarray(before, np.float64)
    keep = np.isfinite(after) & np.isfinite(before)
    return mean_ci(after[keep] - before[keep], **kw)


# ---- shares with their real denominator: Wilson intervals ----------------------------------------------

def _none_if_nan(v):
    return None if isinstance(v, float) and not np.isfinite(v) else v


class Share(NamedTuple):
    """k of n with its Wilson interval; too_few: n < min_n, label: "too few to tell" then, else ""."""

    estimate: float
    low: float
    high: float
    k: int
    n: int
    too_few: bool
    label: str

    def as_dict(self) -> dict:
        return {k: _none_if_nan(v) for k, v in self._asdict().items()}

    def text(self) -> str:
        """"2/5: 40.0% [11.8%, 76.9%] (too few to tell)", "0/0: n/a (too few to tell)"."""
        if not self.n:
            return f"0/0: n/a ({self.label})"
        body = f"{self.k}/{self.n}: {self.estimate:.1%} [{self.low:.1%}, {self.high:.1%}]"
        return f"{body} ({self.label})" if self.label else body


def wilson_share(k: int, n: int, *, level: float = 0.95, min_n: int = MIN_N) -> Share:
    """k of n with the Wilson score interval (`scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`).

    n = 0 gives NaN (nothing to share); n < min_n is labelled "too few to tell" (the interval is still given).
    """
    k, n = int(k), int(n)
    if not 0 <= k <= n:
        raise ValueError(f"a share needs 0 <= k <= n, got {k} of {n}")
    too_few = n < min_n
    label = TOO_FEW if too_few else ""
    if n == 0:
        return Share(float("nan"), float("nan"), float("nan"), 0, 0, True, TOO_FEW)
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return Share(k / n, float(ci.low), float(ci.high), k, n, too_few, label)


def share_wilson(flags, **kw) -> Share:
    """Wilson share of True in `flags`; NaN entries (undefined, e.g. `recalled_specific`) are not counted."""
    flags = np.asarray(flags, np.float64)
    flags = flags[np.isfinite(flags)]
    return wilson_share(int(np.sum(flags != 0)), len(flags), **kw)


def conditional_share_wilson(event, given, **kw) -> Share:
    """Wilson share of P(event | given): k = count(event & given) of n = count(given), the real denominator."""
    event, given = np.asarray(event, bool), np.asarray(given, bool)
    if event.shape != given.shape:
        raise ValueError(f"event and given differ in shape: {event.shape} vs {given.shape}")
    return wilson_share(int((event & given).sum()), int(given.sum()), **kw)


# ---- cluster bootstrap -----------------------------------------------------------------------------------

def fact_clusters(item_facts: Sequence[Sequence[Hashable]]) -> np.ndarray:
    """Cluster label per item, [n]: items that share a fact (directly or through a chain of items) get one
    label, the index of the cluster's first item (so labels depend on the input order only)."""
    parent = list(range(len(item_facts)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_item: dict = {}
    for i, facts in enumerate(item_facts):
        for fact in facts:
            j = first_item.setdefault(fact, i)
            a, b = root(i), root(j)
            parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(len(item_facts))], np.int64)


class ClusterInterval(NamedTuple):
    """estimate on the full sample, percentile interval [low, high], n items, clusters, resamples used."""

    estimate: float
    low: float
    high: float
    n: int
    clusters: int
    resamples: int

    def as_dict(self) -> dict:
        return {k: _none_if_nan(v) for k, v in self._asdict().items()}

    def text(self, digits: int = 3, percent: bool = False) -> str:
        return Interval(self.estimate, self.low, self.high, self.n, self.resamples).text(digits, percent)


def cluster_bootstrap(columns: dict[str, np.ndarray], clusters, statistic: Callable[[dict[str, np.ndarray]], float],
                      *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> ClusterInterval:
    """Percentile bootstrap that resamples clusters: each resample draws as many clusters as there are, with
    replacement, and takes every row of each drawn cluster (a cluster drawn twice contributes its rows twice).

    Args:
      columns: equal-length arrays, one entry per item. clusters: a label per item (e.g. `fact_clusters`).
      statistic: maps a dict of (resampled) columns to a float; NaN means undefined, and such resamples are
        dropped (`resamples` says how many were used).
    """
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    labels = np.asarray(clusters)
    lengths = {len(v) for v in arrays.values()} | {len(labels)}
    if len(lengths) > 1:
        raise ValueError(f"cluster bootstrap columns and labels differ in length: "
                         f"{ {k: len(v) for k, v in arrays.items()} }, clusters {len(labels)}")
    n = lengths.pop()
    nan = float("nan")
    if n == 0:
        return ClusterInterval(nan, nan, nan, 0, 0, 0)
    _, ids = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(ids == c) for c in range(ids.max() + 1)]
    estimate = float(statistic(arrays))
    if not np.isfinite(estimate):
        return ClusterInterval(nan, nan, nan, n, len(members), 0)
    rng = np.random.default_rng(seed)
    values = []
    for draw in rng.integers(0, len(members), size=(n_boot, len(members))):
        rows = np.concatenate([members[c] for c in draw])
        values.append(statistic({k: v[rows] for k, v in arrays.items()}))
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return ClusterInterval(estimate, nan, nan, n, len(members), 0)
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return ClusterInterval(estimate, float(low), float(high), n, len(members), int(len(values)))


def cluster_mean_ci(values, clusters, **kw) -> ClusterInterval:
    """Cluster-bootstrap interval of the mean (NaN entries, with their labels, dropped first)."""
    values, clusters = np.asarray(values, np.float64), np.asarray(clusters)
    keep = np.isfinite(values)
    return cluster_bootstrap({"x": values[keep]}, clusters[keep],
                             lambda c: float(np.mean(c["x"])) if len(c["x"]) else np.nan, **kw)


def cluster_paired_difference_ci(after, before, clusters, **kw) -> ClusterInterval:
    """Cluster-bootstrap interval of mean(after - before) over the items where both are defined."""
    after, before = np.asarray(after, np.float64), np.asarray(before, np.float64)
    return cluster_mean_ci(after - before, clusters, **kw)  # NaN on either side drops the pair


def cluster_mean_fast(values, clusters, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> ClusterInterval:
    """`cluster_mean_ci` without the Python loop over resamples: the same draws (same seed, same order), so the
    same interval up to the summation order.

    A resampled mean is sum(cluster sums of the drawn clusters) / sum(their sizes), so each resample is one
    gather over per-cluster totals; the study computes hundreds of such intervals and this keeps the report fast.
    """
    values, clusters = np.asarray(values, np.float64), np.asarray(clusters)
    if values.shape != clusters.shape:
        raise ValueError(f"values and clusters differ in shape: {values.shape} vs {clusters.shape}")
    keep = np.isfinite(values)
    values, clusters = values[keep], clusters[keep]
    nan = float("nan")
    if not len(values):
        return ClusterInterval(nan, nan, nan, 0, 0, 0)
    _, ids = np.unique(clusters, return_inverse=True)
    sums, sizes = np.bincount(ids, weights=values), np.bincount(ids).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    means = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return ClusterInterval(float(np.mean(values)), float(low), float(high), len(values), len(sums), n_boot)
