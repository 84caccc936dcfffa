"""Greedy decoding with a KV cache, under an optional neuron rescaling: the one decoding engine of jaxkn.

Prompts are left-padded to a bucketed length so compiled shapes repeat; RoPE positions count real tokens only,
so a row generates the same tokens whatever else is in the batch.

Interventions during decoding (METHOD.md §6.3), given as a per-neuron factor `scale` at one site, either [L, F]
for every row or [B, L, F] (row b under its own factor: the study decodes all intervention conditions of one
prompt as the rows of one batch):
- "last" (default): at each step only the newest position is scaled; every earlier position is as an unscaled
  pass computes it, which is what re-running the whole text at each step gives. The newest token's keys/values
  therefore enter the cache from an unscaled copy of its row, computed alongside the scaled one.
- "cached": the newest position is scaled and its scaled keys/values stay in the cache (cheaper; a different
  intervention).
- "all": every position, prompt included, is scaled.

The prompt's last token is fed through the decode step rather than the prefill, so it is "the newest position"
for the first generated token in every mode; `Generation.first_logits` are that step's logits.

A shared `prefix` (METHOD.md §6.4: the few-shot exemplars every query starts with) has its keys/values computed
once (batch 1) and broadcast to the rows; only each row's own tokens are prefilled per row, attending to it. In
mode "all" with a factor the prefix is scaled too: once for an [L, F] factor, per row for a [B, L, F] one.
`text_generator` wraps all this for text prompts (the data filter's `generate_fn`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

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
from jaxkn.validation import check_token_ids

MODES = ("last", "cached", "all")
MIN_SHARED = 8  # `shared_prefix_tokens`: below this many shared tokens the plain path is as fast


class KVCache(NamedTuple):
    """Keys/values of every layer for S slots: k, v [L, B, S, K, E]; which slots hold real tokens and their positions."""

    k: Float[Array, "L B S K E"]
    v: Float[Array, "L B S K E"]
    valid: Array  # [B, S] bool
    positions: Int[Array, "B S"]


class Generation(NamedTuple):
    """tokens: [B, N] generated ids (-1 after a row's stop token; `done` [B] is True for rows that stopped);
    site: [N, L, B, F] activations read at the position that predicted each generated token (None unless
    captured); first_logits: [B, V] float32 logits of the first generated step (e.g. P(first answer token))."""

    tokens: Int[Array, "B N"]
    done: Array
    site: Float[Array, "N L B F"] | None
    first_logits: Float[Array, "B V"]


# ---- factors as site edits ----------------------------------------------------------------------------------

def _site_scale(scale: Float[Array, "L F"] | Float[Array, "B L F"]) -> Float[Array, "L b 1 F"]:
    """The factor as a SiteEdit leaf: [L, 1, 1, F] shared by the rows, or [L, B, 1, F] per row."""
    if scale.ndim == 2:
        return scale[:, None, None, :]
    return jnp.moveaxis(scale, 0, 1)[:, :, None, :]


def _step_edit(scale, site: str, batch: int, on: float) -> tuple[SiteEdit, ...]:
    """The newest position scaled (on=1) or not (on=0), as the edit of a one-token step."""
    if scale is None:
        return ()
    n_layers = _site_scale(scale).shape[0]
    where = jnp.full((n_layers, batch, 1, 1), on, scale.dtype)
    return (SiteEdit(scale=_site_scale(scale), shift=None, where=where, site=site),)


def _prompt_edit(scale, site: str, batch: int, length: int) -> tuple[SiteEdit, ...]:
    """Every position of [batch, length] prompt tokens scaled (mode "all"); () without a factor."""
    if scale is None:
        return ()
    sc = _site_scale(scale)
    return (SiteEdit(scale=sc, shift=None, where=jnp.ones((sc.shape[0], batch, length, 1), scale.dtype),
                     site=site),)


# ---- the cache before the first step -----------------------------------------------------------------------

def prefill(params: Params, cfg: ModelConfig, tokens, valid, n_slots: int, scale, site: str) -> KVCache:
    """Fills the cache with every prompt token but the last (scaled at every position only in mode "all")."""
    batch, length = tokens.shape
    positions = default_positions(valid)
    k, v = forward(params, tokens, cfg, valid=valid, positions=positions,
                   edits=_prompt_edit(scale, site, batch, length), return_logits=False, return_kv=True).kv
    pad = ((0, 0), (0, 0), (0, n_slots - length), (0, 0), (0, 0))
    return KVCache(
        k=jnp.pad(k, pad), v=jnp.pad(v, pad),
        valid=jnp.pad(valid, ((0, 0), (0, n_slots - length))),
        positions=jnp.pad(positions, ((0, 0), (0, n_slots - length))),
    )


@functools.partial(jax.jit, static_argnames=("cfg",))
def _prefix_kv(params, cfg: ModelConfig, prefix: Int[Array, "b P"], edits: tuple[SiteEdit, ...]):
    return forward(params, prefix, cfg, edits=edits, return_logits=False, return_kv=True).kv


@functools.partial(jax.jit, static_argnames=("cfg", "n_slots"))
def _prefill_rows(params, cfg: ModelConfig, k_pre: Float[Array, "L b P K E"], v_pre: Float[Array, "L b P K E"],
                  tokens: Int[Array, "B T"], valid: Bool[Array, "B T"], n_slots: int,
                  edits: tuple[SiteEdit, ...]) -> KVCache:
    """The rows' own tokens (left-padded) after the shared prefix (b = 1: broadcast); the cache of prefix + rows."""
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
        lp, k_l, v_l, layer_edits, index = layer
        x, kv, _ = block(cfg, lp, x, cos, sin, mask, (k_l, v_l), layer_edits, layer=index)
        return x, kv

    layer_index = jnp.arange(cfg.n_layers)  # mixed models (Gemma) pick each layer's window and RoPE by it
    _, (k, v) = jax.lax.scan(body, embed(params, tokens, cfg), (params["layers"], k_pre, v_pre, edits, layer_index))
    pad = n_slots - n_prefix - length
    fill = ((0, 0), (0, 0), (0, pad), (0, 0), (0, 0))
    return KVCache(k=jnp.pad(jnp.concatenate([k_pre, k], 2), fill), v=jnp.pad(jnp.concatenate([v_pre, v], 2), fill),
                   valid=jnp.pad(kv_valid, ((0, 0), (0, pad))), positions=jnp.pad(kv_pos, ((0, 0), (0, pad))))


class _Start(NamedTuple):
    cache: KVCache
    token: Int[Array, "B"]  # each prompt's last token, fed to the first step
    position: Int[Array, "B"]
    slot: int  # the cache slot of the first step


def _start_plain(params, cfg, prompts, n_new: int, prefill_scale, site: str) -> _Start:
    tokens, valid = left_pad(prompts, cfg.pad_token_id or 0)
    batch, length = tokens.shape
    check_context(cfg, length + n_new)
    # One prompt under many factors (the study's conditions, a sweep): prefill it once and repeat its cache,
    # unless a per-row factor scales the prompt itself (mode "all").
    once = batch > 1 and all(list(p) == list(prompts[0]) for p in prompts[1:]) and (
        prefill_scale is None or prefill_scale.ndim == 2)
    rows = 1 if once else batch
    cache = prefill(params, cfg, jnp.asarray(tokens[:rows, :-1]), jnp.asarray(valid[:rows, :-1]),
                    bucket_length(length + n_new), prefill_scale, site)
    if once:
        cache = jax.tree_util.tree_map(lambda a: jnp.repeat(a, batch, axis=1 if a.ndim == 5 else 0), cache)
    return _Start(cache, jnp.asarray(tokens[:, -1]), jnp.asarray(valid.sum(1) - 1, jnp.int32), length - 1)


def _start_shared(params, cfg, prompts, prefix: list[int], n_new: int, prefill_scale, site: str) -> _Start:
    n_prefix, batch = len(prefix), len(prompts)
    own = [list(p[n_prefix:]) for p in prompts]
    tokens, valid = left_pad([o[:-1] for o in own], cfg.pad_token_id or 0)
    check_context(cfg, n_prefix + tokens.shape[1] + 1 + n_new)
    n_slots = bucket_length(n_prefix + tokens.shape[1] + 1 + n_new)
    # The prefix once (batch 1), unless a per-row factor scales it (mode "all"): then once per row.
    pre_rows = batch if prefill_scale is not None and prefill_scale.ndim == 3 else 1
    k_pre, v_pre = _prefix_kv(params, cfg, jnp.asarray([prefix] * pre_rows, jnp.int32),
                              _prompt_edit(prefill_scale, site, pre_rows, n_prefix))
    cache = _prefill_rows(params, cfg, k_pre, v_pre, jnp.asarray(tokens), jnp.asarray(valid), n_slots,
                          _prompt_edit(prefill_scale, site, batch, tokens.shape[1]))
    return _Start(cache, jnp.asarray([o[-1] for o in own], jnp.int32),
                  jnp.asarray([len(p) - 1 for p in prompts], jnp.int32), n_prefix + tokens.shape[1])


# ---- one decoding step ---------------------------------------------------------------------------------------

def decode_rows(params, cfg, cache: KVCache, token, position, edits, capture):
    """One new token per row against the cache: returns (logits [B, V], new k/v [L, B, 1, K, E], captures).

    The building block of `decode_step`, public for callers that batch their own decoding over one cache.
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


def _scaled_and_unscaled(params, cfg, cache, token, position, scale, site: str, capture):
    """Mode "last": (logits and captures of the scaled row, keys/values of the unscaled row)."""
    batch = token.shape[0]
    if scale.ndim == 3:
        # Per-row factors: two plain passes, the arithmetic the study's committed run used (bit parity).
        logits, _, captured = decode_rows(params, cfg, cache, token, position, _step_edit(scale, site, batch, 1.0),
                                          capture)
        _, kv, _ = decode_rows(params, cfg, cache, token, position, (), ())
        return logits, kv, captured
    # One factor: both copies as one vmapped pass (bit parity with the committed run's direct answers).
    both = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]),
                                  _step_edit(scale, site, batch, 0.0), _step_edit(scale, site, batch, 1.0))
    logits, kv, captured = jax.vmap(lambda e: decode_rows(params, cfg, cache, token, position, e, capture))(both)
    return logits[1], jax.tree_util.tree_map(lambda a: a[0], kv), jax.tree_util.tree_map(lambda a: a[1], captured)


@functools.partial(jax.jit, static_argnames=("cfg", "mode", "site", "capture"))
def decode_step(params, cfg: ModelConfig, cache: KVCache, token, position, slot, scale, mode: str, site: str,
                capture: tuple[str, ...] = ()):
    """Feeds `token` [B] at RoPE `position` [B] into cache slot `slot` under `scale` ([L, F], [B, L, F] or None);
    returns (next tokens [B], cache, captures site -> [L, B, F], logits [B, V])."""
    if mode == "last" and scale is not None:
        logits, kv, captured = _scaled_and_unscaled(params, cfg, cache, token, position, scale, site, capture)
    else:
        logits, kv, captured = decode_rows(params, cfg, cache, token, position,
                                           _step_edit(scale, site, token.shape[0], 1.0), capture)
    cache = write_cache(cache, kv, slot, position)
    captured = {s: a[:, :, 0] for s, a in captured.items()}  # [L, B, F]
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache, captured, logits


# ---- prompts ------------------------------------------------------------------------------------------------

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


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token lists."""
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


def shared_prefix_tokens(prompts: Sequence[Sequence[int]], hint: Sequence[int] | None = None,
                         min_shared: int = MIN_SHARED) -> list[int] | None:
    """The token prefix worth sharing: the longest common prefix of the prompts (and of `hint`, e.g. the
    tokenized exemplars, so a fixed hint keeps compiled shapes fixed), leaving every prompt two own tokens;
    None when shorter than `min_shared`. Found on ids, so it never depends on how a tokenizer splits a text
    boundary."""
    rows = [list(p) for p in prompts] + ([list(hint)] if hint is not None else [])
    n = min(common_prefix_length(rows), min(len(p) for p in prompts) - 2)
    return list(prompts[0][:n]) if n >= min_shared else None


def _check_prefix(prompts: Sequence[Sequence[int]], prefix: Sequence[int]) -> list[int]:
    prefix = [int(t) for t in prefix]
    for row, p in enumerate(prompts):
        if [int(t) for t in p[:len(prefix)]] != prefix:
            raise ValueError(f"prompt {row} does not start with the shared prefix ({len(prefix)} tokens); pass "
                             "prompts that all start with it, or prefix=None")
        if len(p) < len(prefix) + 2:
            raise ValueError(f"prompt {row} has {len(p) - len(prefix)} token(s) after the shared prefix; at least 2 "
                             "are needed (the last one feeds the first step): pass a shorter prefix")
    return prefix


def _check_scale(scale, cfg: ModelConfig, batch: int):
    if scale is None:
        return None
    scale = jnp.asarray(scale, jnp.float32)
    shared, per_row = (cfg.n_layers, cfg.d_ff), (batch, cfg.n_layers, cfg.d_ff)
    if scale.shape not in (shared, per_row):
        raise ValueError(f"scale must have shape (L, F) = {shared} for every row or (B, L, F) = {per_row} per "
                         f"row, got {scale.shape}")
    return scale


# ---- the engine ---------------------------------------------------------------------------------------------

def generate(
    params: Params,
    cfg: ModelConfig,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    stop_ids: Sequence[int] = (),
    scale: Float[Array, "L F"] | Float[Array, "B L F"] | None = None,
    mode: str = "last",
    site: str = "product",
    capture: str | None = None,
    prefix: Sequence[int] | None = None,
) -> Generation:
    """Greedy decoding of a batch of token prompts, optionally under a neuron rescaling (see module docstring).

    Args:
      prompts: token id lists (no padding); they are left-padded to a bucketed length.
      max_new_tokens: tokens to generate per row (rows stop early at a stop token; the loop ends when all do).
      stop_ids: ids that end a row (e.g. eos, newline); the stop token itself is returned.
      scale: per-neuron factor at `site`: [L, F] for every row or [B, L, F] per row (None: no intervention).
      mode: "last", "cached" or "all".
      capture: a site whose activations to return at each predicting position.
      prefix: token ids every prompt starts with, computed once and shared by the rows (None or []: not shared;
        `shared_prefix_tokens` finds one).
    """
    check_token_ids(prompts, cfg.vocab_size, where="generate")
    if mode not in MODES:
        raise ValueError(f"unknown decoding mode {mode!r}; choose from {MODES}")
    if site not in SITES or (capture is not None and capture not in SITES):
        raise ValueError(f"unknown site; choose from {SITES}")
    if max_new_tokens <= 0:
        raise ValueError("max_new_tokens must be positive")
    if not len(prompts):
        raise ValueError("no prompts given")
    scale = _check_scale(scale, cfg, len(prompts))
    prefill_scale = scale if mode == "all" else None
    if prefix is not None and len(prefix):
        start = _start_shared(params, cfg, prompts, _check_prefix(prompts, prefix), max_new_tokens,
                              prefill_scale, site)
    else:
        start = _start_plain(params, cfg, prompts, max_new_tokens, prefill_scale, site)
    return _decode(params, cfg, start, max_new_tokens, stop_ids, scale, "cached" if mode == "all" else mode,
                   site, capture)


def _decode(params, cfg, start: _Start, max_new_tokens: int, stop_ids, scale, step_mode: str, site: str,
            capture: str | None) -> Generation:
    cache, token, position = start.cache, start.token, start.position
    stop = np.asarray(list(stop_ids), np.int32)
    out, sites, first_logits = [], [], None
    done = np.zeros(token.shape[0], bool)
    for step in range(max_new_tokens):
        token, cache, captured, logits = decode_step(params, cfg, cache, token, position, start.slot + step,
                                                     scale, step_mode, site, (capture,) if capture else ())
        if step == 0:
            first_logits = logits.astype(jnp.float32)
        position = position + 1
        tok = np.asarray(token)
        out.append(np.where(done, -1, tok))
        if capture:
            sites.append(captured[capture])
        done |= np.isin(tok, stop)
        if done.all():
            break
    return Generation(tokens=np.stack(out, 1), done=done, site=jnp.stack(sites) if capture else None,
                      first_logits=first_logits)


def greedy_generate(
    params: Params,
    cfg: ModelConfig,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    eos_id: int | None = None,
    stop_ids: Sequence[int] = (),
    **options,
) -> list[list[int]]:
    """New tokens per prompt, up to and including the first stop token (eos_id or one of stop_ids);
    `options`: `generate`'s keywords (scale, mode, site, prefix)."""
    stops = list(stop_ids) + ([eos_id] if eos_id is not None else [])
    gen = generate(params, cfg, prompts, max_new_tokens, stop_ids=stops, **options)
    return [[int(t) for t in row if t >= 0] for row in np.asarray(gen.tokens)]


def text_generator(cfg: ModelConfig, params: Params, tokenizer, *, max_new_tokens: int = 8, batch_size: int = 32,
                   stop_at_newline: bool = True, shared_prefix: str | None = None) -> Callable[[list[str]], list[str]]:
    """Text prompts -> generated texts by greedy decoding (a `jaxkn.data.filter_known` generate_fn).

    Batches have a fixed size (the last one padded by repeating a prompt, so compiled shapes repeat); rows stop
    at EOS and, by default, at a newline token, and then only the first line is returned. With `shared_prefix`
    (e.g. `jaxkn.data.shared_prefix(style)`) the tokens a batch shares with it are computed once per batch
    (`shared_prefix_tokens`, `generate(prefix=...)`).
    """
    from jaxkn.data.judge import first_line  # text only; imported late to keep the engine's imports light

    stops = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    newline = tokenizer.encode("\n")
    if stop_at_newline and len(newline) == 1:
        stops.append(newline[0])
    hint = tokenizer.encode(shared_prefix) if shared_prefix else None

    def generate_fn(prompts: list[str]) -> list[str]:
        texts = []
        for start in range(0, len(prompts), batch_size):
            chunk = [tokenizer.encode(p) for p in prompts[start:start + batch_size]]
            padded = chunk + [chunk[0]] * (batch_size - len(chunk))
            prefix = shared_prefix_tokens(padded, hint) if hint is not None else None
            out = greedy_generate(params, cfg, padded, max_new_tokens, stop_ids=stops, prefix=prefix)
            texts += [tokenizer.decode(ids, skip_special_tokens=True) for ids in out[:len(chunk)]]
        return [first_line(t) if stop_at_newline else t for t in texts]

    return generate_fn
