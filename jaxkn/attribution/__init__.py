"""Integrated-gradients attribution over the FFN neurons of every layer (METHOD.md §2-§3, §8).

For a prompt x, gold token y, layer l and the activation a at the neuron site at the predicting position,

    Attr(l, i) = (a_i - b_i) * integral_0^1 dP(y | a_l := b + t (a - b)) / da_i dt

with P the softmax probability of y, approximated by a quadrature rule over the points t_k. Multi-token answers
are teacher-forced (prompt + y_1..y_{K-1} in one row); y_k is predicted at position T-1+k, attributed there, and
the K attributions are averaged.

Two implementations share one interface (`AttributionConfig.method`):

- `"reference"`: for every layer and point, the whole row runs through `jaxkn.model.forward` with a `SiteEdit`
  that replaces layer l's site at the predicting position (what the PyTorch tools do, one compiled program).
- `"fast"` (`jaxkn.attribution.fast`): the prompt's keys/values and residuals are computed once; each point
  only runs the predicting position from layer l upward against the cached keys/values.

dP/da' at the interpolated point a' is the gradient with respect to an additive, zero-valued probe in the
edit's shift: the edit writes `t * a + (1 - t) * b + probe` into the site.

Converged mode (`AttributionConfig.tolerance`, METHOD.md §3): after the fixed rule, the layers whose
completeness error is above the tolerance for some prompt are redone with composite Gauss-Legendre on panels
placed where the previous round saw P(t) move, with twice the points per round up to the per-layer budget;
what still misses it is flagged. Points are evaluated in chunks (`point_chunk`) so memory stays bounded.

Batches are right-padded (to `jaxkn.runtime.bucket_length` so compiled shapes repeat); a row's result does not
depend on the rest of the batch. Axis letters follow `jaxkn.model`; A is the answer-token axis.
"""

from jaxkn.attribution.api import attribute, attribute_batch, attribute_ids
from jaxkn.attribution.chunking import auto_point_chunk, map_point_chunks
from jaxkn.attribution.config import (
    BASELINE_FORMS,
    BASELINES,
    METHODS,
    PANEL_NODES,
    QUADRATURES,
    AttributionConfig,
    AttributionInputError,
    adapted_edges,
    integration_points,
    panel_rule,
    quadrature_rule,
    refined_rule,
)
from jaxkn.attribution.inputs import AttributionBatch, answer_token_ids, make_batch
from jaxkn.attribution.reference import reference_point_gradients
from jaxkn.attribution.results import (
    Attributions,
    PointGradients,
    amig_baseline,
    completeness_summary,
    gold_probability,
)

__all__ = [
    "AttributionConfig", "AttributionBatch", "Attributions", "AttributionInputError", "PointGradients",
    "QUADRATURES", "BASELINES", "BASELINE_FORMS", "METHODS", "quadrature_rule", "integration_points",
    "make_batch", "answer_token_ids", "amig_baseline", "gold_probability", "reference_point_gradients",
    "attribute_batch", "attribute_ids", "attribute", "PANEL_NODES", "panel_rule", "adapted_edges", "refined_rule",
    "completeness_summary", "auto_point_chunk", "map_point_chunks",
]
