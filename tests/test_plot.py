"""jaxkn.plot: the data reductions (numerically) and the two figures (PNG files of the expected size)."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from jaxkn.plot import (
    attribution_heatmap,
    counts_per_layer,
    kn_counts_per_layer,
    layer_counts,
    pool_columns,
    symmetric_limit,
)


def _png_shape(path) -> tuple[int, int]:
    assert path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path).shape[:2]


def test_pool_columns_keeps_each_bins_signed_peak():
    scores = np.array([[0.1, -0.5, 0.2, 0.0, 0.3, 0.05],
                       [0.0, 0.0, -0.1, 0.4, -0.9, 0.9]])
    pooled, edges = pool_columns(scores, max_columns=3)
    np.testing.assert_array_equal(edges, [0, 2, 4, 6])
    np.testing.assert_array_equal(pooled, [[-0.5, 0.2, 0.3], [0.0, 0.4, -0.9]])  # a tie goes negative


def test_pool_columns_is_the_identity_when_columns_fit_and_bins_cover_every_neuron():
    scores = np.random.RandomState(0).randn(4, 10)
    pooled, edges = pool_columns(scores, max_columns=256)
    np.testing.assert_array_equal(pooled, scores)
    np.testing.assert_array_equal(edges, np.arange(11))
    big = np.random.RandomState(1).randn(30, 1536)
    pooled, edges = pool_columns(big, max_columns=256)
    assert pooled.shape == (30, 256) and edges[0] == 0 and edges[-1] == 1536 and (np.diff(edges) == 6).all()
    # the peak survives pooling: the largest |score| of each layer is in the pooled row
    np.testing.assert_array_equal(np.abs(pooled).max(1), np.abs(big).max(1))
    uneven, edges = pool_columns(big[:, :1000], max_columns=256)
    assert uneven.shape == (30, 256) and set(np.diff(edges)) <= {3, 4} and edges[-1] == 1000


def test_pool_columns_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\[layers, neurons\] array, got shape \(5,\)"):
        pool_columns(np.zeros(5))
    with pytest.raises(ValueError, match="max_columns must be >= 1"):
        pool_columns(np.zeros((2, 3)), max_columns=0)


def test_symmetric_limit():
    assert symmetric_limit(np.array([[0.2, -0.7], [0.1, np.nan]])) == 0.7
    assert symmetric_limit(np.zeros((2, 2))) == 1.0


def test_counts_per_layer_counts_distinct_neurons():
    counts = counts_per_layer([(0, 156), (0, 173), (2, 5), (2, 5), (3, 1)], n_layers=4)
    np.testing.assert_array_equal(counts, [2, 0, 1, 1])
    np.testing.assert_array_equal(counts_per_layer([], 3), [0, 0, 0])
    with pytest.raises(ValueError, match=r"layer\(s\) \[4\] outside 0..3"):
        counts_per_layer([(4, 0)], n_layers=4)


def test_layer_counts_takes_counts_or_neuron_sets():
    got = layer_counts({"counts": np.array([1, 0, 2]), "set": {(1, 4), (1, 9)}, "eleuther": [[2, 0]], "none": []},
                       n_layers=3)
    assert list(got) == ["counts", "set", "eleuther", "none"]
    np.testing.assert_array_equal(np.stack(list(got.values())), [[1, 0, 2], [0, 2, 0], [0, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"set 'odd' has shape \(2,\)"):
        layer_counts({"odd": [1, 2]}, n_layers=3)


def test_attribution_heatmap_writes_a_png_of_the_figure_size(tmp_path):
    rng = np.random.RandomState(0)
    scores = 0.01 * rng.randn(30, 1536)
    kn = [(0, 156), (29, 1197), (14, 700)]
    for layer, index in kn:
        scores[layer, index] = 0.5
    path = tmp_path / "figs" / "fact.png"
    fig = attribution_heatmap(scores, title="Paradiso -> Dante Alighieri", neurons=kn, path=path)
    width, height = fig.get_size_inches()
    assert _png_shape(path) == (round(height * 100), round(width * 100)) == (640, 900)
    ax = fig.axes[0]
    assert ax.get_title() == "Paradiso -> Dante Alighieri" and ax.get_xlim() == (0.0, 1536.0)
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), [[156.5, 0], [700.5, 14], [1197.5, 29]])
    assert ax.images[0].get_array().shape == (30, 256)
    attribution_heatmap(scores[:3, :48], title="tiny, |scores|", absolute=True, path=tmp_path / "abs.png")
    assert _png_shape(tmp_path / "abs.png") == (208, 900)


def test_kn_counts_per_layer_writes_a_png(tmp_path):
    sets = {"hop 1": [(0, 156), (0, 173), (29, 1197)], "hop 2": np.bincount([0, 3, 3], minlength=30)}
    fig = kn_counts_per_layer(sets, 30, tmp_path / "layers.png", title="SmolLM2 facts")
    width, height = fig.get_size_inches()
    assert _png_shape(tmp_path / "layers.png") == (round(height * 100), round(width * 100)) == (350, 1100)
    bars = fig.axes[0].containers
    assert len(bars) == 2 and [b.datavalues[0] for b in bars] == [2, 1] and bars[1].datavalues[3] == 2
    with pytest.raises(ValueError, match="counts_by_set is empty"):
        kn_counts_per_layer({}, 30)


def test_figures_of_a_real_attribution(tiny_models, tmp_path):
    from jaxkn.attribution import AttributionConfig, attribute_ids
    from jaxkn.neurons import coarse_neurons

    _, cfg, params = tiny_models["llama2"]
    result = attribute_ids(params, cfg, [[1, 22, 3, 9]], [[30]], AttributionConfig(steps=4))
    kn = coarse_neurons(result.scores[0], threshold=0.2)
    fig = attribution_heatmap(result.scores[0], title="tiny llama2", neurons=kn, path=tmp_path / "fact.png")
    assert _png_shape(tmp_path / "fact.png") == (208, 900) and len(fig.axes[0].collections[0].get_offsets()) == len(kn)
    counts = kn_counts_per_layer({"coarse": kn}, cfg.n_layers, tmp_path / "layers.png").axes[0].containers[0]
    np.testing.assert_array_equal(counts.datavalues, counts_per_layer(kn, cfg.n_layers))
    assert counts.datavalues.sum() == len(kn) > 0
