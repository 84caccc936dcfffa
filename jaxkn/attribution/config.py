"""What is attributed and how (METHOD.md §2-§3): the settings value and the quadrature rules."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxkn.site import SITES

QUADRATURES = ("left", "right", "linspace", "gauss_legendre")
BASELINES = ("zero", "amig")
BASELINE_FORMS = ("difference", "activation")
METHODS = ("fast", "reference")


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
    """

    site: str = "product"
    baseline: str = "zero"
    baseline_form: str = "difference"
    quadrature: str = "left"
    steps: int = 20
    method: str = "fast"
    layers: tuple[int, ...] | None = None
    layers_per_group: int | None = None

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


def integration_points(config: AttributionConfig) -> tuple[np.ndarray, np.ndarray]:
    """The rule's points plus, when absent, t = 0 with weight 0 (it gives P(baseline) for completeness)."""
    nodes, weights = quadrature_rule(config.quadrature, config.steps)
    if nodes[0] != 0.0:
        nodes, weights = np.concatenate([nodes, [0.0]]), np.concatenate([weights, [0.0]])
    return nodes, weights
