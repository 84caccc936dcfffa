"""The fast schedule for integrated gradients (METHOD.md §8): results of the reference path, less arithmetic.

Replacing layer l's site at the predicting position p changes nothing at earlier positions (causal attention)
and nothing below layer l. So one prefix pass per prompt computes every layer's keys/values, the residual
stream at p and the observed activation; each integration point then runs only the row at p, from layer l
upward, attending to the cached keys/values at positions < p plus its own new key/value.

A "row" is one (start layer s, answer slot a, point k) of one prompt. The layers from the lowest attributed
layer to the top are cut into groups of `layers_per_group`; each group is one `lax.scan` over its layers:

- rows started in earlier groups enter with their current residual;
- rows that start inside the group enter at the group's first layer with the prefix's residual, run unchanged
  up to their start layer s (recomputing exactly what the prefix computed), and there the model's own MLP seam
  (`SiteEdit` with `where = [layer == s]`) writes `t * a + (1 - t) * b + probe` into the site.

With one layer per group this is the static schedule with ideal arithmetic (layer j processes the rows started
below it plus those starting at j); larger groups compile fewer distinct programs at the cost of re-running up
to `layers_per_group - 1` layers per row. After the last layer, the LM head runs on the rows only, and one
`jax.grad` of the summed gold probabilities over all probes gives dP/da' at every point of every layer (rows
are independent, so the gradient of the sum is each row's own gradient).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jaxkn.attribution.chunking import auto_point_chunk, map_point_chunks
from jaxkn.attribution.config import AttributionConfig
from jaxkn.attribution.inputs import AttributionBatch
from jaxkn.attribution.results import PointGradients, gold_probability
from jaxkn.config import ModelConfig
from jaxkn.model import (
    attention_mask,
    attention_residual,
    attention_scores,
    block,
    default_positions,
    embed,
    layer_view,
    lm_head,
    mlp_residual,
    norm,
    project_qkv,
    rope_tables,
)
from jaxkn.site import SiteEdit

_MASKED = -1e30  # as in jaxkn.model: finite, so a fully masked row stays finite


def _gather(x: Float[Array, "B T ..."], at: Int[Array, "B P"]) -> Float[Array, "B P ..."]:
    return jnp.take_along_axis(x, at.reshape(*at.shape, *([1] * (x.ndim - 2))), axis=1)


def prefix_pass(params, batch: AttributionBatch, cfg: ModelConfig, site: str):
    """One forward over the teacher-forced rows, capturing what every point reuses.

    Returns (resid [L, B, A, D]: residual entering each layer at the read positions; keys, values
    [L, B, T, K, E]; acts [L, B, A, F]: the site at the read positions; prob_actual [B, A]).
    """
    positions = default_positions(batch.valid)
    cos, sin = rope_tables(cfg, positions)
    mask = attention_mask(cfg, positions, positions, batch.valid)

    def body(x, layer):
        lp, index = layer
        x_at = _gather(x, batch.answer_positions)
        x, kv, captured = block(cfg, lp, x, cos, sin, mask, None, (), (site,), layer=index)
        return x, (x_at, kv, _gather(captured[site], batch.answer_positions))

    x, (resid, (keys, values), acts) = jax.lax.scan(body, embed(params, batch.tokens, cfg),
                                                    (params["layers"], jnp.arange(cfg.n_layers)))
    logits = lm_head(cfg, params, _gather(x, batch.answer_positions))
    return resid, keys, values, acts, gold_probability(logits, batch.answer_tokens)


def attend_rows(cfg: ModelConfig, q: Float[Array, "B N H E"], k_own: Float[Array, "B N K E"],
                v_own: Float[Array, "B N K E"], k_cache: Float[Array, "B S K E"], v_cache: Float[Array, "B S K E"],
                cache_mask: Bool[Array, "B N S"]) -> Float[Array, "B N H*E"]:
    """Attention of independent rows: each sees the shared cache (masked per row) and its own key/value only."""
    b, n = q.shape[:2]
    q = q.reshape(b, n, cfg.n_kv_heads, cfg.q_per_kv, cfg.head_dim)
    # scaled and soft-capped as jaxkn.model.attend does (the family's query scalar and attention soft cap)
    to_cache = attention_scores(cfg, jnp.einsum("bnkge,bske->bkgns", q, k_cache))
    to_cache = jnp.where(cache_mask[:, None, None], to_cache, _MASKED)
    to_self = attention_scores(cfg, jnp.einsum("bnkge,bnke->bkgn", q, k_own))
    probs = jax.nn.softmax(jnp.concatenate([to_cache, to_self[..., None]], axis=-1), axis=-1).astype(v_cache.dtype)
    out = jnp.einsum("bkgns,bske->bnkge", probs[..., :-1], v_cache)
    out = out + jnp.einsum("bkgn,bnke->bnkge", probs[..., -1], v_own)
    return out.reshape(b, n, cfg.n_heads * cfg.head_dim)


def _schedule(first: int, n_layers: int, group: int) -> list[tuple[int, int]]:
    """[(start, stop)) layer ranges covering first..n_layers-1."""
    return [(lo, min(lo + group, n_layers)) for lo in range(first, n_layers, group)]


def default_group(n_attributed: int, n_span: int) -> int:
    """Layers per scan group when not set: about sqrt(span), a balance of compile time and extra arithmetic."""
    del n_attributed
    return max(1, round(math.sqrt(n_span)))


def _row_layout(starts: tuple[int, ...], n_answers: int, n_points: int):
    """Static per-row metadata for rows started at `starts`: (start layer, answer slot, point index), (s, a, k)."""
    s, a, k = np.meshgrid(np.asarray(starts), np.arange(n_answers), np.arange(n_points), indexing="ij")
    return s.ravel(), a.ravel(), k.ravel()


def _run_span(params, batch: AttributionBatch, cfg: ModelConfig, site: str, keys, values, state, lo: int, hi: int):
    """Runs the rows of `state` through layers lo..hi-1 against the cached keys/values; returns their residual.

    state = (x [B, N, D], shift [B, N, F], t [B, N], start [N], slot [N]): a row's residual, the edit terms
    written at its start layer, its start layer and its answer slot.
    """
    x, shift, t, start, slot = state
    kv_positions = default_positions(batch.valid)  # [B, S]
    index = batch.answer_positions[:, slot]  # [B, N]: the token index each row reads at
    rope_position = jnp.take_along_axis(kv_positions, index, axis=1)
    cos, sin = rope_tables(cfg, rope_position)
    # cached keys strictly before the row's index: the row's own new key replaces the cached one there
    earlier = jnp.arange(kv_positions.shape[1])[None, None, :] < index[:, :, None]
    cache_mask = attention_mask(cfg, rope_position, kv_positions, batch.valid) & earlier
    edit_scale = t[:, :, None]

    def body(x, layer_inputs):
        lp, k_cache, v_cache, index = layer_inputs
        cos_l, sin_l, mask_l = layer_view(cfg, index, cos, sin, cache_mask)  # the layer's kind (Gemma)
        q, k, v = project_qkv(cfg, lp, norm(cfg, x, lp["attn_norm"]), cos_l, sin_l)
        x = attention_residual(cfg, lp, x, attend_rows(cfg, q, k, v, k_cache, v_cache, mask_l))
        where = (start == index).astype(x.dtype)[None, :, None]
        edit = SiteEdit(scale=edit_scale, shift=shift, where=where, site=site)
        x, _ = mlp_residual(cfg, lp, x, (edit,))
        return x, None

    span = jax.tree_util.tree_map(lambda w: w[lo:hi], params["layers"])
    x, _ = jax.lax.scan(body, x, (span, keys[lo:hi], values[lo:hi], jnp.arange(lo, hi)))
    return x


def _started_rows(resid, lo: int, base: Float[Array, "N B F"], t: Float[Array, "B N"], start, slot, probe):
    """State of rows that enter at layer lo with the prefix's residual (they run unchanged up to `start`)."""
    shift = (1 - t)[:, :, None] * jnp.swapaxes(base, 0, 1) + probe  # [B, N, F]
    return resid[lo][:, slot], shift, t, start, slot


def _point_chunk(cfg: ModelConfig, config: AttributionConfig, n_rows: int, rows_per_point: int, n_points: int,
                 dtype) -> int:
    return config.point_chunk or auto_point_chunk(cfg, n_rows * rows_per_point, n_points, jnp.dtype(dtype).itemsize)


def _answer_nodes(nodes: Float[Array, "L B A M"], slots, a, k) -> Float[Array, "B N"]:
    """t of each row (attributed-layer slot, answer slot, point) for every prompt."""
    return jnp.moveaxis(nodes[np.asarray(slots), :, np.asarray(a), np.asarray(k)], 0, 1)


def fast_point_gradients(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig,
                         baseline: Float[Array, "L B A F"], nodes: Float[Array, "L B A M"]) -> PointGradients:
    """Same contract as `jaxkn.attribution.reference_point_gradients`, by the cached-prefix schedule
    (the layers are `config.layers`, static; the points are evaluated `config.point_chunk` at a time)."""
    layers = config.layer_indices(cfg.n_layers)
    n_rows, n_answers = batch.answer_tokens.shape
    resid, keys, values, acts_all, prob_actual = prefix_pass(params, batch, cfg, config.site)
    dtype = resid.dtype
    slot_of_layer = {layer: i for i, layer in enumerate(layers)}
    group = config.layers_per_group or default_group(len(layers), cfg.n_layers - min(layers))
    groups = [(lo, hi, tuple(sorted(l for l in layers if lo <= l < hi)))
              for lo, hi in _schedule(min(layers), cfg.n_layers, group)]

    def chunk_gradients(nodes):
        n_points = nodes.shape[-1]

        def new_rows(lo: int, starts: tuple[int, ...], probe):
            """Residual, metadata and edit terms of the rows that start in a group."""
            s, a, k = _row_layout(starts, n_answers, n_points)
            slots = [slot_of_layer[i] for i in s]
            base = baseline[np.asarray(slots)]  # [N, B, A, F]
            base = jnp.take_along_axis(base, jnp.asarray(a)[:, None, None, None], axis=2)[:, :, 0]  # [N, B, F]
            t = _answer_nodes(nodes, slots, a, k).astype(dtype)
            return _started_rows(resid, lo, base, t, jnp.asarray(s), jnp.asarray(a), probe)

        def total_probability(probes):
            state = None
            for (lo, hi, starts), probe in zip(groups, probes):
                if starts:
                    fresh = new_rows(lo, starts, probe)
                    state = fresh if state is None else tuple(
                        jnp.concatenate([old, new], axis=1 if old.ndim > 1 else 0) for old, new in zip(state, fresh))
                state = (_run_span(params, batch, cfg, config.site, keys, values, state, lo, hi),) + state[1:]
            x, _, _, _, slot = state
            logits = lm_head(cfg, params, x)  # [B, N, V]: only the rows' positions, never the prompt's
            probs = gold_probability(logits, batch.answer_tokens[:, slot])
            return probs.sum(), probs

        probes = [jnp.zeros((n_rows, len(starts) * n_answers * n_points, cfg.d_ff), dtype)
                  for _, _, starts in groups]
        grads, probs = jax.grad(total_probability, has_aux=True)(probes)
        grads = jnp.concatenate(grads, axis=1).reshape(n_rows, len(layers), n_answers, n_points, cfg.d_ff)
        probs = probs.reshape(n_rows, len(layers), n_answers, n_points)
        # rows are ordered by start layer ascending; restore the order of config.layers
        order = np.argsort(np.argsort(np.asarray(layers)))
        return jnp.moveaxis(grads, 1, 0)[order], jnp.moveaxis(probs, 1, 0)[order]

    chunk = _point_chunk(cfg, config, n_rows, len(layers) * n_answers, nodes.shape[-1], dtype)
    grads, probs = map_point_chunks(chunk_gradients, nodes, chunk)
    return PointGradients(acts_all[np.asarray(layers)], grads, probs, prob_actual)


def fast_point_gradients_at(params, batch: AttributionBatch, cfg: ModelConfig, config: AttributionConfig,
                            layers: Int[Array, "L"], baseline: Float[Array, "L B A F"],
                            nodes: Float[Array, "L B A M"]) -> PointGradients:
    """`fast_point_gradients` for a traced list of layers (any of `config.layers`, repeats allowed).

    Converged mode redoes a data-dependent subset of layers; with the layers traced, one compiled program
    serves every subset of a given size. All rows enter at the lowest of `config.layers` and run one scan to
    the top, the edit written at each row's own start layer: up to twice the arithmetic of the static
    schedule, on the few layers that need more points.
    """
    n_rows, n_answers = batch.answer_tokens.shape
    lo = min(config.layer_indices(cfg.n_layers))
    resid, keys, values, acts_all, prob_actual = prefix_pass(params, batch, cfg, config.site)
    dtype = resid.dtype
    n_slots = layers.shape[0]

    def chunk_gradients(nodes):
        n_points = nodes.shape[-1]
        j, a, k = _row_layout(tuple(range(n_slots)), n_answers, n_points)
        base = jnp.moveaxis(baseline[np.asarray(j), :, np.asarray(a)], 0, 0)  # [N, B, F]
        t = _answer_nodes(nodes, j, a, k).astype(dtype)

        def total_probability(probe):
            state = _started_rows(resid, lo, base, t, layers[np.asarray(j)], jnp.asarray(a), probe)
            x = _run_span(params, batch, cfg, config.site, keys, values, state, lo, cfg.n_layers)
            probs = gold_probability(lm_head(cfg, params, x), batch.answer_tokens[:, jnp.asarray(a)])
            return probs.sum(), probs

        probe = jnp.zeros((n_rows, len(j), cfg.d_ff), dtype)
        grads, probs = jax.grad(total_probability, has_aux=True)(probe)
        grads = jnp.moveaxis(grads.reshape(n_rows, n_slots, n_answers, n_points, cfg.d_ff), 1, 0)
        return grads, jnp.moveaxis(probs.reshape(n_rows, n_slots, n_answers, n_points), 1, 0)

    chunk = _point_chunk(cfg, config, n_rows, n_slots * n_answers, nodes.shape[-1], dtype)
    grads, probs = map_point_chunks(chunk_gradients, nodes, chunk)
    return PointGradients(acts_all[layers], grads, probs, prob_actual)


__all__ = ["prefix_pass", "attend_rows", "fast_point_gradients", "fast_point_gradients_at", "default_group"]
