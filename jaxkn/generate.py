"""Greedy decoding with a KV cache, under an optional neuron rescaling.

Prompts are left-padded to a bucketed length so compiled shapes repeat; RoPE positions count real tokens only,
so a row generates the same tokens whatever else is in the batch.

Interventions during decoding (METHOD.md §6.3), given as a per-neuron factor `scale` [L, F] at one site:
- "last" (default): at each step only the newest position is scaled; every earlier position is as an unscaled
  pass computes it, which is what re-running the whole text at each step gives. The newest token's keys/values
  therefore enter the cache from an unscaled copy of its row, computed alongside the scaled one.
- "cached": the newest position is scaled and its scaled keys/values stay in the cache (cheaper; a different
  intervention).
- "all": every position, prompt included, is scaled.

The prompt's last token is fed through the decode step rather than the prefill, so it is "the newest position"
for the first generated token in every mode.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxkn.config import ModelConfig
from jaxkn.model import (
    Params,
    attention_mask,
    block,
    check_context,
    default_positions,
    embed,
    forward,
    lm_head,
    rope_tables,
)
from jaxkn.runtime import bucket_length
from jaxkn.site import SITES, SiteEdit

MODES = ("last", "cached", "all")


class KVCache(NamedTuple):
    """Keys/values of every layer for S slots: k, v [L, B, S, K, E]; which slots hold real tokens and their positions."""

    k: Float[Array, "L B S K E"]
    v: Float[Array, "L B S K E"]
    valid: Array  # [B, S] bool
    positions: Int[Array, "B S"]


class Generation(NamedTuple):
    """tokens: [B, N] generated ids (after a stop token, `done` is True); site: [N, L, B, F] activations read at
    the position that predicted each generated token (None unless captured)."""

    tokens: Int[Array, "B N"]
    done: Array
    site: Float[Array, "N L B F"] | None


def _step_edit(scale: Float[Array, "L F"] | None, site: str, batch: int, on: float) -> tuple[SiteEdit, ...]:
    if scale is None:
        return ()
    n_layers = scale.shape[0]
    where = jnp.full((n_layers, batch, 1, 1), on, scale.dtype)
    return (SiteEdit(scale=scale[:, None, None, :], shift=None, where=where, site=site),)


def prefill(params: Params, cfg: ModelConfig, tokens, valid, n_slots: int, scale, site: str) -> KVCache:
    """Fills the cache with every prompt token but the last (scaled at every position only in mode "all")."""
    batch, length = tokens.shape
    positions = default_positions(valid)
    edits = ()
    if scale is not None:
        edits = (SiteEdit(scale=scale[:, None, None, :], shift=None,
                          where=jnp.ones((scale.shape[0], batch, length, 1), scale.dtype), site=site),)
    k, v = forward(params, tokens, cfg, valid=valid, positions=positions, edits=edits,
                   return_logits=False, return_kv=True).kv
    pad = ((0, 0), (0, 0), (0, n_slots - length), (0, 0), (0, 0))
    return KVCache(
        k=jnp.pad(k, pad), v=jnp.pad(v, pad),
        valid=jnp.pad(valid, ((0, 0), (0, n_slots - length))),
        positions=jnp.pad(positions, ((0, 0), (0, n_slots - length))),
    )


def decode_rows(params, cfg, cache: KVCache, token, position, edits, capture):
    """One new token per row against the cache: returns (logits [B, V], new k/v [L, B, 1, K, E], captures).

    The building block of `decode_step`, public for callers that batch their own decoding conditions over
    one shared cache (the two-hop study decodes all intervention conditions of an item this way).
    """
    x = embed(params, token[:, None], cfg)
    cos, sin = rope_tables(cfg, position[:, None])
    own_valid = jnp.ones_like(token, bool)[:, None]
    mask = attention_mask(cfg, position[:, None], jnp.concatenate([cache.positions, position[:, None]], 1),
                          jnp.concatenate([cache.valid, own_valid], 1))

    def body(x, layer):
        lp, k_l, v_l, layer_edits, index = layer
        x, kv, captured = block(cfg, lp, x, cos, sin, mask, (k_l, v_l), layer_edits, capture, layer=index)
        return x, (kv, captured)

    layer_index = jnp.arange(cfg.n_layers)  # mixed models (Gemma) pick each layer's window and RoPE by it
    x, (kv, captured) = jax.lax.scan(body, x, (params["layers"], cache.k, cache.v, edits, layer_index))
    return lm_head(cfg, params, x[:, 0]), kv, captured


def write_cache(cache: KVCache, kv: tuple[Array, Array], slot, position: Int[Array, "B"]) -> KVCache:
    """Stores one new token per row (keys/values [L, B, 1, K, E] at RoPE `position`) in cache slot `slot`."""
    k_new, v_new = kv
    update = jax.lax.dynamic_update_slice_in_dim
    return KVCache(
        k=update(cache.k, k_new, slot, axis=2),
        v=update(cache.v, v_new, slot, axis=2),
        valid=update(cache.valid, jnp.ones((position.shape[0], 1), bool), slot, axis=1),
        positions=update(cache.positions, position[:, None], slot, axis=1),
    )


@functools.partial(jax.jit, static_argnames=("cfg", "mode", "site", "capture"))
def decode_step(params, cfg: ModelConfig, cache: KVCache, token, position, slot, scale, mode: str, site: str,
                capture: tuple[str, ...] = ()):
    """Feeds `token` [B] at RoPE `position` [B] into cache slot `slot`; returns (next tokens, cache, captures)."""
    batch = token.shape[0]
    if mode == "last" and scale is not None:
        # Two copies of the row: unscaled (its keys/values go to the cache) and scaled (its logits are read).
        both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]),
                                      _step_edit(scale, site, batch, 0.0), _step_edit(scale, site, batch, 1.0))
        logits, kv, captured = jax.vmap(
            lambda e: decode_rows(params, cfg, cache, token, position, e, capture))(both)
        logits, kv, captured = logits[1], jax.tree_util.tree_map(lambda a: a[0], kv), \
            jax.tree_util.tree_map(lambda a: a[1], captured)
    else:
        logits, kv, captured = decode_rows(params, cfg, cache, token, position,
                                            _step_edit(scale, site, batch, 1.0), capture)
    cache = write_cache(cache, kv, slot, position)
    captured = {s: a[:, :, 0] for s, a in captured.items()}  # [L, B, F]
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache, captured


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None):
    """Left-pads token lists to a bucketed common length: (tokens [B, T], valid [B, T]) as numpy."""
    if not len(prompts):
        raise ValueError("no prompts given")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ValueError(f"prompt {lengths.index(0)} is empty")
    length = length or bucket_length(max(lengths))
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    valid = np.zeros((len(prompts), length), bool)
    for row, p in enumerate(prompts):
        tokens[row, length - len(p):] = p
        valid[row, length - len(p):] = True
    return tokens, valid


def generate(
    params: Params,
    cfg: ModelConfig,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    stop_ids: Sequence[int] = (),
    scale: Float[Array, "L F"] | None = None,
    mode: str = "last",
    site: str = "product",
    capture: str | None = None,
) -> Generation:
    """Greedy decoding of a batch of token prompts, optionally under a neuron rescaling (see module docstring).

    Args:
      prompts: token id lists (no padding); they are left-padded to a bucketed length.
      max_new_tokens: tokens to generate per row (rows stop early at a stop token; the loop ends when all do).
      stop_ids: ids that end a row (e.g. eos, newline); the stop token itself is returned.
      scale: per-neuron factor [L, F] at `site` (None: no intervention).
      mode: "last", "cached" or "all".
      capture: a site whose activations to return at each predicting position.
    """
    if mode not in MODES:
        raise ValueError(f"unknown decoding mode {mode!r}; choose from {MODES}")
    if site not in SITES or (capture is not None and capture not in SITES):
        raise ValueError(f"unknown site; choose from {SITES}")
    if max_new_tokens <= 0:
        raise ValueError("max_new_tokens must be positive")
    if scale is not None:
        scale = jnp.asarray(scale, jnp.float32)
        if scale.shape != (cfg.n_layers, cfg.d_ff):
            raise ValueError(f"scale must have shape (L, F) = {(cfg.n_layers, cfg.d_ff)}, got {scale.shape}")
    tokens, valid = left_pad(prompts, cfg.pad_token_id or 0)
    batch, length = tokens.shape
    check_context(cfg, length + max_new_tokens)
    n_slots = bucket_length(length + max_new_tokens)
    cache = prefill(params, cfg, jnp.asarray(tokens[:, :-1]), jnp.asarray(valid[:, :-1]), n_slots,
                    scale if mode == "all" else None, site)
    token = jnp.asarray(tokens[:, -1])
    position = jnp.asarray(valid.sum(1) - 1, jnp.int32)
    step_mode = "cached" if mode == "all" else mode
    stop = np.asarray(list(stop_ids), np.int32)
    out, sites = [], []
    done = np.zeros(batch, bool)
    for step in range(max_new_tokens):
        token, cache, captured = decode_step(params, cfg, cache, token, position, length - 1 + step, scale,
                                             step_mode, site, (capture,) if capture else ())
        position = position + 1
        tok = np.asarray(token)
        out.append(np.where(done, -1, tok))
        if capture:
            sites.append(captured[capture])
        done |= np.isin(tok, stop)
        if done.all():
            break
    return Generation(tokens=np.stack(out, 1), done=done, site=jnp.stack(sites) if capture else None)


def greedy_generate(
    params: Params,
    cfg: ModelConfig,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    eos_id: int | None = None,
    stop_ids: Sequence[int] = (),
    **intervention,
) -> list[list[int]]:
    """New tokens per prompt, up to and including the first stop token (eos_id or one of stop_ids)."""
    stops = list(stop_ids) + ([eos_id] if eos_id is not None else [])
    gen = generate(params, cfg, prompts, max_new_tokens, stop_ids=stops, **intervention)
    rows = []
    for row in np.asarray(gen.tokens):
        rows.append([int(t) for t in row if t >= 0])
    return rows
