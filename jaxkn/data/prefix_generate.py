"""Greedy decoding of many prompts that share a token prefix, computing the prefix once.

The data filter's prompts all begin with the same few-shot exemplars (~45 of ~65 tokens). Running that prefix
once (batch 1) and only each prompt's own tokens per row cuts the prefill ~3-4x on CPU. The prefix's keys and
values are broadcast to the batch and the rows' own tokens attend to them (`jaxkn.model.block` with `past_kv`);
decoding then proceeds exactly as `jaxkn.generate.generate` does, through its `decode_step`.

The shared prefix is found on token ids (the longest common prefix of the rows, at most the `prefix` hint), so it
never depends on how a tokenizer splits a text boundary. Positions count real tokens, as everywhere in jaxkn:
row r's tokens sit at the same RoPE positions as in an unpadded run of its full prompt, so the result equals
`greedy_generate` on the full prompts up to float32 summation order.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jaxkn.config import ModelConfig
from jaxkn.generate import KVCache, decode_step, greedy_generate, left_pad
from jaxkn.model import attention_mask, block, check_context, default_positions, embed, forward, rope_tables
from jaxkn.runtime import bucket_length

MIN_SHARED = 8  # below this many shared tokens the plain path is as fast


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token lists."""
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


@functools.partial(jax.jit, static_argnames=("cfg",))
def _prefix_kv(params, cfg: ModelConfig, prefix: Int[Array, "1 P"]):
    return forward(params, prefix, cfg, return_logits=False, return_kv=True).kv


@functools.partial(jax.jit, static_argnames=("cfg", "n_slots"))
def _prefill_rows(params, cfg: ModelConfig, k_pre: Float[Array, "L 1 P K E"], v_pre: Float[Array, "L 1 P K E"],
                  tokens: Int[Array, "B T"], valid: Bool[Array, "B T"], n_slots: int) -> KVCache:
    """The rows' own tokens (left-padded) after the shared prefix; returns the cache of prefix + rows."""
    batch, length = tokens.shape
    n_prefix = k_pre.shape[2]
    k_pre, v_pre = (jnp.broadcast_to(a, a.shape[:1] + (batch,) + a.shape[2:]) for a in (k_pre, v_pre))
    pre_pos = jnp.broadcast_to(jnp.arange(n_prefix, dtype=jnp.int32), (batch, n_prefix))
    positions = n_prefix + default_positions(valid)
    kv_pos = jnp.concatenate([pre_pos, positions], 1)
    kv_valid = jnp.concatenate([jnp.ones((batch, n_prefix), bool), valid], 1)
    mask = attention_mask(cfg, positions, kv_pos, kv_valid)
    cos, sin = rope_tables(cfg, positions)

    def body(x, layer):
        lp, k_l, v_l = layer
        x, kv, _ = block(cfg, lp, x, cos, sin, mask, (k_l, v_l))
        return x, kv

    _, (k, v) = jax.lax.scan(body, embed(params, tokens), (params["layers"], k_pre, v_pre))
    pad = n_slots - n_prefix - length
    fill = ((0, 0), (0, 0), (0, pad), (0, 0), (0, 0))
    return KVCache(k=jnp.pad(jnp.concatenate([k_pre, k], 2), fill), v=jnp.pad(jnp.concatenate([v_pre, v], 2), fill),
                   valid=jnp.pad(kv_valid, ((0, 0), (0, pad))), positions=jnp.pad(kv_pos, ((0, 0), (0, pad))))


def prefix_greedy_generate(params, cfg: ModelConfig, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                           prefix: Sequence[int] | None = None, stop_ids: Sequence[int] = ()) -> list[list[int]]:
    """New tokens per prompt (up to and including the first stop id), like `greedy_generate`.

    Args:
      prompts: token id lists.
      max_new_tokens: tokens to generate per row.
      prefix: the shared token prefix expected (e.g. the tokenized exemplars): the prefix actually shared is the
        longest common prefix of the rows and this hint, so a fixed hint keeps compiled shapes fixed.
      stop_ids: ids that end a row.
    """
    rows = [list(p) for p in prompts] + ([list(prefix)] if prefix is not None else [])
    # Every row keeps at least two own tokens: all but the last are prefilled, the last feeds the first step.
    n_prefix = min(common_prefix_length(rows), min(len(p) for p in prompts) - 2)
    if n_prefix < MIN_SHARED:
        return greedy_generate(params, cfg, prompts, max_new_tokens, stop_ids=stop_ids)
    own = [list(p[n_prefix:]) for p in prompts]
    tokens, valid = left_pad([o[:-1] for o in own], cfg.pad_token_id or 0)
    check_context(cfg, n_prefix + tokens.shape[1] + 1 + max_new_tokens)
    n_slots = bucket_length(n_prefix + tokens.shape[1] + 1 + max_new_tokens)
    k_pre, v_pre = _prefix_kv(params, cfg, jnp.asarray([list(prompts[0][:n_prefix])], jnp.int32))
    cache = _prefill_rows(params, cfg, k_pre, v_pre, jnp.asarray(tokens), jnp.asarray(valid), n_slots)
    token = jnp.asarray([o[-1] for o in own], jnp.int32)
    position = jnp.asarray([len(p) - 1 for p in prompts], jnp.int32)
    first_slot = n_prefix + tokens.shape[1]
    out, done = [], np.zeros(len(prompts), bool)
    for step in range(max_new_tokens):
        token, cache, _ = decode_step(params, cfg, cache, token, position, first_slot + step, None, "last",
                                      "product", ())
        position = position + 1
        tok = np.asarray(token)
        out.append(np.where(done, -1, tok))
        done |= np.isin(tok, np.asarray(list(stop_ids), np.int32))
        if done.all():
            break
    return [[int(t) for t in row if t >= 0] for row in np.stack(out, 1)]
