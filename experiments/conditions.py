"""Many interventions on one prompt in one batch: each row decodes the same prompt under its own neuron factor.

`jaxkn.generate.generate` takes one factor [L, F] shared by the batch; the study's interventions put a dozen
conditions (enhance / suppress / random control on hop 1, hop 2, both) on the same prompt. Here the prompt's
keys/values are computed once (unscaled: in modes "last" and "cached" the prompt's earlier positions are
never scaled) and broadcast to the N condition rows; each decoding step then scales row n's newest position by
factor n. In mode "last" the newest token's keys/values enter the cache from an unscaled copy of its row, as in
`jaxkn.generate` (METHOD §6.3). Returns the tokens and P(first answer token) per condition.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxkn.generate import KVCache, decode_rows, left_pad, prefill, write_cache
from jaxkn.runtime import bucket_length
from jaxkn.site import SiteEdit

SUPPORTED_MODES = ("last", "cached")


@functools.partial(jax.jit, static_argnames=("cfg", "site", "mode"))
def _step(params, cfg, cache: KVCache, token, position, slot, factors, site: str, mode: str):
    """One token per row; row n's newest position is scaled by factors[n] ([N, L, F]). -> (logits, cache)."""
    n_rows = token.shape[0]
    scale = jnp.moveaxis(factors, 0, 1)[:, :, None, :]  # [L, N, 1, F]
    edit = (SiteEdit(scale=scale, shift=None, where=jnp.ones((scale.shape[0], n_rows, 1, 1), scale.dtype),
                     site=site),)
    logits, kv, _ = decode_rows(params, cfg, cache, token, position, edit, ())
    if mode == "last":  # the cache keeps what an unscaled pass computes at this position
        _, kv, _ = decode_rows(params, cfg, cache, token, position, (), ())
    return logits, write_cache(cache, kv, slot, position)


def decode_conditions(params, cfg, prompt: list[int], factors: np.ndarray, max_new_tokens: int, *,
                      stop_ids=(), site: str = "product", mode: str = "last", first_target: int | None = None):
    """Greedy decoding of `prompt` under each of N factors [N, L, F].

    Returns (tokens [N, steps] with -1 after a stop, P(first_target) at the first step [N] or None).
    """
    if mode not in SUPPORTED_MODES:
        raise ValueError(f"decode mode {mode!r} is not supported for batched conditions; use one of "
                         f"{SUPPORTED_MODES} (mode 'all' scales the prompt too: use jaxkn.generate per condition)")
    tokens, valid = left_pad([prompt], cfg.pad_token_id or 0)
    length = tokens.shape[1]
    n_slots = bucket_length(length + max_new_tokens)
    one = prefill(params, cfg, jnp.asarray(tokens[:, :-1]), jnp.asarray(valid[:, :-1]), n_slots, None, site)
    n_rows = factors.shape[0]
    cache = jax.tree_util.tree_map(lambda a: jnp.repeat(a, n_rows, axis=1 if a.ndim == 5 else 0), one)
    token = jnp.full((n_rows,), tokens[0, -1], jnp.int32)
    position = jnp.full((n_rows,), valid.sum() - 1, jnp.int32)
    factors = jnp.asarray(factors, jnp.float32)
    stops, out, done, p_first = np.asarray(list(stop_ids)), [], np.zeros(n_rows, bool), None
    for step in range(max_new_tokens):
        logits, cache = _step(params, cfg, cache, token, position, length - 1 + step, factors, site, mode)
        if step == 0 and first_target is not None:
            p_first = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, first_target])
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        position = position + 1
        tok = np.asarray(token)
        out.append(np.where(done, -1, tok))
        done |= np.isin(tok, stops)
        if done.all():
            break
    return np.stack(out, 1), p_first
