"""Shared comparisons for the attribution tests (METHOD.md §9: relative error, KN sets with a margin)."""

from __future__ import annotations

import numpy as np

# Padded batch: single- and multi-token answers, prompts of different lengths (mistral's window is 4).
PROMPTS = [[1, 5, 9, 13, 7], [1, 22, 3], [4, 8, 15, 16, 23, 42, 11, 2, 9]]
ANSWERS = [[17], [30, 31, 12], [5, 6]]


def relative_error(ref, other) -> float:
    """max |difference| / max |reference| over one prompt's whole [L, F] tensor."""
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    return float(np.abs(ref - other).max() / np.abs(ref).max())


def assert_same_coarse_sets(ref, other, threshold: float = 0.2, margin: float = 1e-3):
    """Coarse KN sets equal, ignoring neurons within margin * max of the threshold."""
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    top = ref.max()
    cut = threshold * top
    clear = np.abs(ref - cut) > margin * abs(top)
    a, b = ref > cut, other > threshold * other.max()
    assert np.array_equal(a[clear], b[clear]), f"coarse sets differ at {np.argwhere((a != b) & clear)[:10]}"


def assert_batch_close(ref_scores, other_scores, tol: float):
    for i, (r, o) in enumerate(zip(np.asarray(ref_scores), np.asarray(other_scores))):
        err = relative_error(r, o)
        assert err <= tol, f"prompt {i}: relative error {err:.3g} > {tol}"
        assert_same_coarse_sets(r, o)
