"""Bootstrap confidence intervals for the study's headline numbers.

Items are the unit of resampling: every statistic is a function of a table with one row per item, and a
resample draws items with replacement (so paired quantities, e.g. two-hop minus single-hop level of the same
item, stay paired). Intervals are percentile intervals at 95% by default. A statistic that is undefined on a
resample (e.g. a share of errors when the resample has no error) is dropped from that resample's count; the
number of resamples used is returned with the interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


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
