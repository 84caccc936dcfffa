"""What is attributed and how (METHOD.md §2-§3): the settings value and the quadrature rules."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxkn.site import SITES

QUADRATURES = ("left", "right", "linspace", "gauss_legendre")
BASELINES = ("zero", "amig")
BASELINE_FORMS = ("difference", "activation")
METHODS = ("fast", "reference")
PANEL_NODES = 4  # Gauss-Legendre nodes per panel in converged mode's refinement rounds


class AttributionInputError(ValueError):
    """A prompt/answer batch that cannot be attributed (empty, mismatched, too long, out of vocabulary)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttributionConfig:
    """What is attributed and how (METHOD.md §2-§3); recorded in every result.

    Attributes:
      site: the neuron site, "product" (default: the vector `down` reads), "gate" (pre-activation) or "act".
      baseline: "zero" (Dai et al.) or "amig" (mean activation with one token at a time replaced by EOS).
      baseline_form: "difference" multiplies the integral by (a - b); "activation" by a (as the AMIG authors'
        code does; completeness does not hold then).
      quadrature: "left" Riemann t = k/m (default, Dai's code), "right" (k = 1..m), "linspace"
        (EleutherAI: linspace(0, 1, m) averaged) or "gauss_legendre".
      steps: m, the number of points.
      method: "fast" (cached prefix, METHOD.md §8) or "reference" (full forward per point).
      layers: the layers to attribute (default: all); results are ordered as given.
      layers_per_group: fast path only: layers per compiled scan group (1 = a static schedule with ideal
        arithmetic; larger groups compile faster and redo a few layers per point). None = automatic.
      tolerance: converged mode (METHOD.md §3) when set: every attributed layer's completeness error (per
        prompt, probability units) must be at most this. The fixed rule above is the first round for every
        layer; a (prompt, layer) above the tolerance is redone with composite Gauss-Legendre on panels placed
        where the rounds so far saw P(t) move, doubling the points each round (32, 64, ...) up to
        `max_points_per_layer`; what is still above it then is flagged (`Attributions.flagged`). None: the
        fixed rule only.
      max_points_per_layer: the per-layer point budget of converged mode (default 256; refinement rounds use
        the powers of two up to it).
      point_chunk: integration points evaluated at once per compiled step (rows, their activations for the
        backward pass and their vocabulary logits scale with it); None picks it from a memory budget.
        Chunking never changes results.
    """

    site: str = "product"
    baseline: str = "zero"
    baseline_form: str = "difference"
    quadrature: str = "left"
    steps: int = 20
    method: str = "fast"
    layers: tuple[int, ...] | None = None
    layers_per_group: int | None = None
    tolerance: float | None = None
    max_points_per_layer: int = 256
    point_chunk: int | None = None

    def __post_init__(self):
        for name, allowed in (("site", SITES), ("baseline", BASELINES), ("baseline_form", BASELINE_FORMS),
                              ("quadrature", QUADRATURES), ("method", METHODS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"AttributionConfig.{name}={getattr(self, name)!r}; choose one of {allowed}")
        if self.steps < 1 or (self.quadrature == "linspace" and self.steps < 2):
            raise ValueError(f"AttributionConfig.steps={self.steps} is too small for {self.quadrature!r}")
        if self.layers is not None:
            layers = tuple(int(i) for i in self.layers)
            if not layers or len(set(layers)) != len(layers):
                raise ValueError(f"AttributionConfig.layers={self.layers!r}: give distinct layer indices")
            object.__setattr__(self, "layers", layers)
        if self.layers_per_group is not None and self.layers_per_group < 1:
            raise ValueError(f"layers_per_group must be >= 1, got {self.layers_per_group}")
        if self.tolerance is not None and not self.tolerance > 0:
            raise ValueError(f"AttributionConfig.tolerance={self.tolerance!r}: give a positive probability "
                             "(e.g. 0.01) or None for the fixed rule only")
        if self.max_points_per_layer < self.steps:
            raise ValueError(f"AttributionConfig.max_points_per_layer={self.max_points_per_layer} is below "
                             f"steps={self.steps}: the budget must hold the first round's rule")
        if self.point_chunk is not None and self.point_chunk < 1:
            raise ValueError(f"AttributionConfig.point_chunk={self.point_chunk}: give a positive count or None")

    def refinement_points(self) -> tuple[int, ...]:
        """Point counts of converged mode's refinement rounds: powers of two of at least 1.5 x `steps` and of
        at least one panel pair, up to `max_points_per_layer` (empty without a tolerance).

        Why 1.5 x: a round that barely adds points rarely passes. On SmolLM2's 3-shot prompts, from a
        Gauss-Legendre 12 first round, 16 points brought no layer-0 prompt of six facts within 0.01 (32 did for
        some, 64 for most), so the rounds start at 32, as they do from left m = 20.
        """
        if self.tolerance is None:
            return ()
        counts, n = [], 2 * PANEL_NODES
        while n <= self.max_points_per_layer:
            if n >= 1.5 * self.steps:
                counts.append(n)
            n *= 2
        return tuple(counts)

    def layer_indices(self, n_layers: int) -> tuple[int, ...]:
        layers = tuple(range(n_layers)) if self.layers is None else self.layers
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"layers {bad} do not exist in a model with {n_layers} layers")
        return layers

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def quadrature_rule(name: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points t_k in [0, 1] and weights w_k with integral_0^1 f ~ sum_k w_k f(t_k) (float64)."""
    k = np.arange(steps, dtype=np.float64)
    if name == "left":
        return k / steps, np.full(steps, 1.0 / steps)
    if name == "right":
        return (k + 1) / steps, np.full(steps, 1.0 / steps)
    if name == "linspace":
        return np.linspace(0.0, 1.0, steps), np.full(steps, 1.0 / steps)
    if name == "gauss_legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return (x + 1) / 2, w / 2
    raise ValueError(f"unknown quadrature {name!r}; choose one of {QUADRATURES}")


def panel_rule(edges: Float[Array, "... P+1"], nodes_per_panel: int = PANEL_NODES
               ) -> tuple[Float[Array, "... M"], Float[Array, "... M"]]:
    """Composite Gauss-Legendre on the panels [edges_j, edges_j+1] (any leading axes): points and weights,
    M = P * nodes_per_panel, ascending when the edges are."""
    x, w = np.polynomial.legendre.leggauss(nodes_per_panel)
    lo, width = edges[..., :-1, None], jnp.diff(edges, axis=-1)[..., None]  # [..., P, 1]
    nodes = lo + width * jnp.asarray((x + 1) / 2, edges.dtype)
    weights = width * jnp.asarray(w / 2, edges.dtype)
    return nodes.reshape(*edges.shape[:-1], -1), weights.reshape(*edges.shape[:-1], -1)


def adapted_edges(t: Float[Array, "... S"], p: Float[Array, "... S"], n_panels: int) -> Float[Array, "... P+1"]:
    """Panel edges on [0, 1] that follow where a sampled path P(t) moves.

    Half of the panels are spread uniformly and half in proportion to |dP/dt| of the piecewise-linear
    interpolant through the samples (which must include t = 0 and t = 1): the uniform half keeps every part of
    [0, 1] resolved, so doubling the panels converges even where the samples missed a feature, and the other
    half lands on the near-jumps that a fixed rule misses (METHOD.md §3). A flat path gives uniform panels.
    """
    order = jnp.argsort(t, axis=-1)
    t, p = jnp.take_along_axis(t, order, axis=-1), jnp.take_along_axis(p, order, axis=-1)
    moved = jnp.concatenate([jnp.zeros_like(p[..., :1]), jnp.cumsum(jnp.abs(jnp.diff(p, axis=-1)), -1)], -1)
    total = moved[..., -1:]
    share = jnp.where(total > 0, moved / jnp.where(total > 0, total, 1), t)  # flat path: uniform
    mass = 0.5 * t + 0.5 * share  # increasing from 0 to 1 in t
    targets = jnp.linspace(0.0, 1.0, n_panels + 1, dtype=t.dtype)
    flat_t, flat_mass = t.reshape(-1, t.shape[-1]), mass.reshape(-1, t.shape[-1])
    edges = jax.vmap(lambda m, x: jnp.interp(targets, m, x))(flat_mass, flat_t)
    return edges.reshape(*t.shape[:-1], n_panels + 1).at[..., 0].set(0.0).at[..., -1].set(1.0)


def refined_rule(t: Float[Array, "... S"], p: Float[Array, "... S"], n_points: int
                 ) -> tuple[Float[Array, "... M"], Float[Array, "... M"]]:
    """Converged mode's rule for one refinement round: `n_points` (a multiple of `PANEL_NODES`) composite
    Gauss-Legendre points on panels adapted to the previous round's samples (t, P(t)), t = 0 and 1 included."""
    if n_points % PANEL_NODES:
        raise ValueError(f"refined_rule: n_points={n_points} is not a multiple of {PANEL_NODES} nodes per panel")
    return panel_rule(adapted_edges(t, p, n_points // PANEL_NODES), PANEL_NODES)


def integration_points(config: AttributionConfig) -> tuple[np.ndarray, np.ndarray]:
    """The rule's points plus, when absent, t = 0 with weight 0 (it gives P(baseline) for completeness)."""
    nodes, weights = quadrature_rule(config.quadrature, config.steps)
    if nodes[0] != 0.0:
        nodes, weights = np.concatenate([nodes, [0.0]]), np.concatenate([weights, [0.0]])
    return nodes, weights
