"""The reference schedule: a full forward/backward of the whole row per (layer, answer token, point)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxkn.attribution.chunking import auto_point_chunk, map_point_chunks
from jaxkn.attribution.config import AttributionConfig
from jaxkn.attribution.inputs import AttributionBatch
from jaxkn.attribution.results import PointGradients, gold_probability
from jaxkn.config import ModelConfig
from jaxkn.model import forward
from jaxkn.site import SiteEdit


def reference_point_gradients(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig,
                              baseline: Float[Array, "L B A F"], nodes: Float[Array, "L B A M"],
                              layers: Int[Array, "L"] | None = None) -> PointGradients:
    """dP/da' at every point by a full forward/backward of the whole row per (layer, answer token, point).

    Args:
      baseline: b per attributed layer, row and answer slot.
      nodes: the points t per attributed layer, row and answer slot (each may have its own rule).
      layers: the model layers the L axis holds (traced; default `config.layers`).
    """
    layers = jnp.asarray(config.layer_indices(cfg.n_layers) if layers is None else layers)
    out = forward(params, batch.tokens, cfg, valid=batch.valid, capture=(config.site,),
                  capture_at=batch.answer_positions, logits_at=batch.answer_positions)
    acts = out.captures[config.site][layers]
    dtype = acts.dtype
    width = batch.tokens.shape[1]

    def prob_at(probe, tokens, valid, position, gold, layer, t, base):
        where = ((jnp.arange(cfg.n_layers) == layer)[:, None] & (jnp.arange(width) == position)[None, :])
        edit = SiteEdit(scale=jnp.broadcast_to(t.astype(dtype), (cfg.n_layers, 1, 1, 1)),
                        shift=jnp.broadcast_to(((1 - t) * base + probe)[None, None, None], (cfg.n_layers, 1, 1, cfg.d_ff)),
                        where=where.astype(dtype)[:, None, :, None], site=config.site)
        logits = forward(params, tokens[None], cfg, valid=valid[None], edits=edit,
                         logits_at=position[None, None]).logits[0, 0]
        return gold_probability(logits, gold)

    value_and_grad = jax.value_and_grad(prob_at)
    over_points = jax.vmap(value_and_grad, in_axes=(None, None, None, None, None, None, 0, None))
    over_answers = jax.vmap(over_points, in_axes=(None, None, None, 0, 0, None, 0, 0))
    over_rows = jax.vmap(over_answers, in_axes=(None, 0, 0, 0, 0, None, 0, 0))
    n_rows, n_answers = batch.answer_tokens.shape
    # a reference row carries all T positions through every layer
    chunk = config.point_chunk or auto_point_chunk(cfg, n_rows * n_answers * width, nodes.shape[-1], dtype.itemsize)

    def one_layer(args):
        layer, base, t = args  # base [B, A, F], t [B, A, M]

        def points(t):
            probs, grads = over_rows(jnp.zeros(cfg.d_ff, dtype), batch.tokens, batch.valid,
                                     batch.answer_positions, batch.answer_tokens, layer, t.astype(dtype), base)
            return grads, probs  # [B, A, m, F], [B, A, m]

        return map_point_chunks(points, t, chunk)

    grads, probs = jax.lax.map(one_layer, (layers, baseline, nodes))
    return PointGradients(acts, grads, probs, gold_probability(out.logits, batch.answer_tokens))
