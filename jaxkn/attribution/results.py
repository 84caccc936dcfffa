"""Attribution results, the per-point contract both schedules return, and the shared pieces below both
(the gold probability, the AMIG baseline)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jaxkn.attribution.config import AttributionConfig
from jaxkn.attribution.inputs import AttributionBatch
from jaxkn.config import ModelConfig
from jaxkn.model import forward


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Attributions:
    """Attributions of a batch, with the settings that produced them.

    Attributes:
      scores: Attr(l, i) averaged over answer tokens, [B, L, F] (L = the attributed `layers`, in order).
      completeness_error: |sum_i Attr(l, i) - mean_k (P_k(a) - P_k(b))| per layer, [B, L].
      prob_actual: P(y_k) of the unmodified model, [B, A] (0 where answer_mask is False).
      prob_baseline: P(y_k) with layer l's site at the baseline, [B, L, A].
      answer_mask: which answer slots are real tokens, [B, A].
      points_per_layer: integration points of the rule that produced each (prompt, layer)'s scores, [B, L]
        (the fixed rule's `steps`; in converged mode the round that met the tolerance, or the last one).
      flagged: completeness error above `config.tolerance` after the point budget, [B, L] (all False
        without a tolerance).
      layers: the model layers the L axis holds.
      config: the `AttributionConfig` used.
    """

    scores: Float[Array, "B L F"]
    completeness_error: Float[Array, "B L"]
    prob_actual: Float[Array, "B A"]
    prob_baseline: Float[Array, "B L A"]
    answer_mask: Bool[Array, "B A"]
    points_per_layer: Int[Array, "B L"]
    flagged: Bool[Array, "B L"]
    layers: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    config: AttributionConfig = dataclasses.field(metadata=dict(static=True))

    def layer_scores(self, n_layers: int) -> np.ndarray:
        """Scores on the model's full layer axis, [B, n_layers, F] (NaN on layers not attributed)."""
        full = np.full((self.scores.shape[0], n_layers, self.scores.shape[2]), np.nan, np.float64)
        full[:, list(self.layers)] = np.asarray(self.scores)
        return full


def completeness_summary(attrs_list) -> dict:
    """The completeness record of a study (its summary.json keys): over every (prompt, layer) of the given
    `Attributions` (all over the same layers), the largest and the median completeness error, how many
    (prompt, layer) pairs are flagged, and per layer the most points any prompt used."""
    attrs_list = list(attrs_list)
    if not attrs_list:
        raise ValueError("completeness_summary needs at least one Attributions")
    if len({a.layers for a in attrs_list}) != 1:
        raise ValueError("completeness_summary: the Attributions cover different layers; summarise each set apart")
    errors = np.concatenate([np.asarray(a.completeness_error, np.float64).ravel() for a in attrs_list])
    points = np.concatenate([np.asarray(a.points_per_layer) for a in attrs_list], axis=0)
    return {"max": float(errors.max()), "median": float(np.median(errors)),
            "flagged_layers": int(sum(np.asarray(a.flagged).sum() for a in attrs_list)),
            "points_per_layer": [int(n) for n in points.max(axis=0)]}


class PointGradients(NamedTuple):
    """What both implementations return: the site activation, and dP/da' and P at every point."""

    acts: Float[Array, "L B A F"]
    grads: Float[Array, "L B A M F"]
    probs: Float[Array, "L B A M"]
    prob_actual: Float[Array, "B A"]


def gold_probability(logits: Float[Array, "... V"], gold: Int[Array, "..."]) -> Float[Array, "..."]:
    """Softmax probability of the gold token, computed in at least float32."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.exp(jnp.take_along_axis(logp, gold[..., None], axis=-1)[..., 0])


def amig_baseline(params, batch: AttributionBatch, cfg: ModelConfig, site: str) -> Float[Array, "L B A F"]:
    """AMIG baseline (Chen et al. 2024): for each predicting position p, the mean over real positions j <= p of
    the site activation at p when token j alone is replaced by EOS."""
    if cfg.eos_token_id is None:
        raise ValueError("the AMIG baseline needs cfg.eos_token_id; this model config has none")
    b, t = batch.tokens.shape
    replace = jnp.eye(t, dtype=bool)  # [J, T]: row j replaces token j
    tokens = jnp.where(replace[None], cfg.eos_token_id, batch.tokens[:, None, :]).reshape(b * t, t)
    rep = lambda x: jnp.repeat(x, t, axis=0)  # noqa: E731
    out = forward(params, tokens, cfg, valid=rep(batch.valid), capture=(site,),
                  capture_at=rep(batch.answer_positions), return_logits=False)
    acts = out.captures[site].reshape(cfg.n_layers, b, t, *batch.answer_positions.shape[1:], cfg.d_ff)
    # position j counts for the read position p when j <= p and j is a real token
    counts = (jnp.arange(t)[None, :, None] <= batch.answer_positions[:, None, :]) & batch.valid[:, :, None]
    weights = counts / jnp.maximum(counts.sum(axis=1, keepdims=True), 1)  # [B, J, A]
    return jnp.einsum("lbjaf,bja->lbaf", acts, weights.astype(acts.dtype))
