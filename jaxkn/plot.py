"""Figures of where knowledge neurons are: a layer x neuron attribution heatmap of one fact, and KN counts per layer.

Both functions return a `matplotlib.figure.Figure` drawn on the Agg canvas (no pyplot: nothing changes the
session's backend or keeps figures open, and a notebook still shows the returned figure) and write a PNG when
given a path. The data reductions behind them are pure functions (`pool_columns`, `symmetric_limit`,
`counts_per_layer`, `layer_counts`), tested on their own.

    fig = attribution_heatmap(result.scores[0], title="Paradiso -> Dante", neurons=kn, path="fact.png")
    fig = kn_counts_per_layer({"hop 1": kn_hop1, "hop 2": kn_hop2}, cfg.n_layers, path="layers.png")

Axes: scores are [L, F] (layers x neurons, the letters of `jaxkn.model`); a neuron is (layer, index).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from jaxtyping import Float, Int
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Neuron = tuple[int, int]
DPI = 100


# ---- data reductions (pure) ---------------------------------------------------------------------------

def pool_columns(scores: Float[np.ndarray, "L F"], max_columns: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Pools F neuron columns into at most `max_columns` contiguous bins, keeping each bin's largest |score|.

    Max-|.| pooling (sign kept) rather than a mean: a knowledge neuron is one strong column among thousands of
    near-zero ones, and averaging would wash it out.

    Returns:
      pooled [L, C] and edges [C + 1] (bin c covers neurons edges[c] .. edges[c + 1] - 1; C = min(F, max_columns)).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"scores must be a non-empty [layers, neurons] array, got shape {scores.shape}")
    if max_columns < 1:
        raise ValueError(f"max_columns must be >= 1, got {max_columns}")
    n_neurons = scores.shape[1]
    edges = np.linspace(0, n_neurons, min(n_neurons, max_columns) + 1).round().astype(int)
    starts = edges[:-1]
    peak = np.maximum.reduceat(np.abs(scores), starts, axis=1)  # [L, C]
    low = np.minimum.reduceat(scores, starts, axis=1)
    pooled = np.where(-low >= peak, low, peak)  # the signed value of largest magnitude; ties go negative
    return pooled, edges


def symmetric_limit(scores: Float[np.ndarray, "..."]) -> float:
    """The colour-scale half-width: max |score| (1.0 when all are zero or non-finite), so 0 sits mid-scale."""
    values = np.abs(np.asarray(scores, dtype=np.float64))
    values = values[np.isfinite(values)]
    limit = float(values.max()) if values.size else 0.0
    return limit if limit > 0 else 1.0


def counts_per_layer(neurons: Iterable[Neuron], n_layers: int) -> Int[np.ndarray, "L"]:
    """How many of `neurons` ((layer, index) pairs, duplicates counted once) sit in each layer, [L]."""
    unique = {(int(layer), int(index)) for layer, index in neurons}
    layers = np.asarray(sorted(layer for layer, _ in unique), dtype=int)
    bad = layers[(layers < 0) | (layers >= n_layers)]
    if bad.size:
        raise ValueError(f"neuron layer(s) {sorted(set(bad.tolist()))} outside 0..{n_layers - 1}: is n_layers right?")
    return np.bincount(layers, minlength=n_layers)


def layer_counts(counts_by_set: Mapping[str, object], n_layers: int) -> dict[str, np.ndarray]:
    """set name -> counts [L]; each value is already a count array [L] or a neuron set ((layer, index) pairs)."""
    out = {}
    for name, value in counts_by_set.items():
        array = np.asarray(value if isinstance(value, np.ndarray) else list(value))
        if array.ndim == 1 and array.size == n_layers:
            out[name] = array.astype(float)
        elif array.size == 0 or (array.ndim == 2 and array.shape[1] == 2):
            out[name] = counts_per_layer(array.reshape(-1, 2).tolist(), n_layers).astype(float)
        else:
            raise ValueError(f"set {name!r} has shape {array.shape}: give counts per layer ([{n_layers}]) or "
                             f"neurons as (layer, index) pairs")
    return out


# ---- figures ------------------------------------------------------------------------------------------

def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": the PNG is exactly figsize * DPI pixels
    return fig


def attribution_heatmap(
    scores: Float[np.ndarray, "L F"],
    *,
    title: str,
    neurons: Iterable[Neuron] | None = None,
    path: str | Path | None = None,
    max_columns: int = 256,
    absolute: bool = False,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A layer x neuron heatmap of one fact's attribution scores, with its knowledge neurons marked.

    Args:
      scores: [L, F] attribution scores (e.g. `Attributions.scores[i]`, or a fact's mean over prompts).
      title: the figure title (say which fact and prompt).
      neurons: (layer, index) pairs to mark with open circles (the KN set), or None.
      path: where to write a PNG (parents created), or None.
      max_columns: neurons are pooled into at most this many columns (`pool_columns`: max |score| per bin).
      absolute: show |scores| on a 0..max scale instead of signed scores on a symmetric one.
      figsize: inches (default: 9 wide, height growing with L); the PNG is figsize * 100 pixels.
    """
    pooled, edges = pool_columns(scores, max_columns)
    n_layers, n_neurons = pooled.shape[0], int(edges[-1])
    fig = _figure(figsize or (9.0, 1.6 + 0.16 * n_layers))
    ax = fig.add_subplot()
    limit = symmetric_limit(pooled)
    shown, cmap, vmin = (np.abs(pooled), "magma_r", 0.0) if absolute else (pooled, "RdBu_r", -limit)
    # extent in neuron units, so the x axis and the markers read true neuron indices whatever the pooling.
    image = ax.imshow(shown, aspect="auto", origin="lower", cmap=cmap, vmin=vmin, vmax=limit,
                      interpolation="nearest", extent=(0, n_neurons, -0.5, n_layers - 0.5))
    per_bin = n_neurons / pooled.shape[1]
    label = "|attribution|" if absolute else "attribution"
    fig.colorbar(image, ax=ax, label=label + (f" (max |.| per {per_bin:.3g} neurons)" if per_bin > 1 else ""))
    marked = sorted({(int(layer), int(index)) for layer, index in (neurons or ())})
    if marked:
        layers, indices = np.asarray(marked).T
        # clip_on=False: neurons of the first and last layer sit on the border and would be cut in half.
        ax.scatter(indices + 0.5, layers, s=40, facecolors="none", edgecolors="black", linewidths=1.2,
                   clip_on=False, zorder=3)
    noun = "knowledge neuron" if len(marked) == 1 else "knowledge neurons"
    ax.set_xlabel("neuron index" + (f"   (circled: {len(marked)} {noun})" if marked else ""))
    ax.set_ylabel("layer")
    ax.set_title(title)
    return _save(fig, path)


def kn_counts_per_layer(
    counts_by_set: Mapping[str, object],
    n_layers: int,
    path: str | Path | None = None,
    *,
    title: str = "knowledge neurons per layer",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Grouped bars: how many knowledge neurons each named set has in each layer.

    Args:
      counts_by_set: set name -> counts per layer [L] or a neuron set ((layer, index) pairs), e.g.
        {"hop 1": kn1, "hop 2": kn2, "two-hop": kn12}; bars keep the mapping's order.
      n_layers: L, the model's layer count (layers with no neuron show as empty).
      path: where to write a PNG (parents created), or None.
      title: the figure title.
      figsize: inches (default: width growing with L, 3.5 high); the PNG is figsize * 100 pixels.
    """
    counts = layer_counts(counts_by_set, n_layers)
    if not counts:
        raise ValueError("counts_by_set is empty: give at least one named set")
    fig = _figure(figsize or (max(6.0, 0.3 * n_layers + 2.0), 3.5))
    ax = fig.add_subplot()
    x = np.arange(n_layers)
    width = 0.8 / len(counts)
    for k, (name, values) in enumerate(counts.items()):
        ax.bar(x + (k - (len(counts) - 1) / 2) * width, values, width, label=f"{name} ({int(values.sum())})")
    ax.set_xticks(x if n_layers <= 40 else x[:: int(np.ceil(n_layers / 40))])
    ax.set_xlim(-0.6, n_layers - 0.4)
    ax.set_xlabel("layer")
    ax.set_ylabel("knowledge neurons")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.25-neuron ticks
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


__all__ = ["attribution_heatmap", "counts_per_layer", "kn_counts_per_layer", "layer_counts", "pool_columns",
           "symmetric_limit"]
