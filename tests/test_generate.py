"""Greedy KV-cache decoding: equals uncached re-runs, HF `generate`, and is independent of batch composition."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxkn.generate import generate, greedy_generate
from jaxkn.model import forward
from jaxkn.site import SiteEdit

PROMPTS = [[5, 9, 13, 2, 7], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [42]]
N_NEW = 6
RERUN_LEN = 24


def rerun_greedy(params, cfg, prompt, n_new, scale=None, scaled="none"):
    """Greedy decoding by re-running the whole text each step (the slow definition of each mode)."""
    return _rerun(params, cfg, prompt, n_new, scale, scaled)[0]


def _rerun(params, cfg, prompt, n_new, scale, scaled):
    """(tokens, "act" site [N, L, F] at each predicting position) of `rerun_greedy`."""
    tokens, acts = list(prompt), []
    for _ in range(n_new):
        t = len(tokens)
        # Right-padded to one length, so every step reuses one compiled program.
        row = np.zeros((1, RERUN_LEN), np.int32)
        row[0, :t] = tokens
        valid = np.arange(RERUN_LEN)[None] < t
        edits = None
        if scale is not None:
            where = np.zeros((cfg.n_layers, 1, RERUN_LEN, 1), np.float32)
            # "cached": every position that was once the newest (the prompt's last token onward) stays scaled.
            first = {"last": t - 1, "cached": len(prompt) - 1, "all": 0}[scaled]
            where[:, :, first:t] = 1.0
            edits = SiteEdit(scale=scale[:, None, None, :], shift=None, where=jnp.asarray(where))
        logits, act = _forward_at(params, row, valid, cfg, edits, np.asarray([[t - 1]]))
        tokens.append(int(jnp.argmax(logits[0, 0])))
        acts.append(np.asarray(act)[:, 0, 0])
    return tokens[len(prompt):], np.stack(acts)


@functools.partial(jax.jit, static_argnames="cfg")
def _forward_at(params, row, valid, cfg, edits, at):
    out = forward(params, row, cfg, valid=valid, edits=edits, logits_at=at, capture=("act",), capture_at=at)
    return out.logits, out.captures["act"]


def test_cached_decoding_equals_rerunning_the_text(tiny):
    _, cfg, params = tiny
    got = greedy_generate(params, cfg, PROMPTS, N_NEW)
    for prompt, row in zip(PROMPTS, got):
        assert row == rerun_greedy(params, cfg, prompt, N_NEW)


def test_greedy_matches_hf_generate(tiny):
    hf, cfg, params = tiny
    got = greedy_generate(params, cfg, PROMPTS[:2], N_NEW)
    for prompt, row in zip(PROMPTS[:2], got):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([prompt]), max_new_tokens=N_NEW, do_sample=False, min_new_tokens=N_NEW,
                              pad_token_id=0, eos_token_id=None)
        assert row == ref[0, len(prompt):].tolist()


def test_batched_equals_one_at_a_time(tiny_models):
    _, cfg, params = tiny_models["mistral"]
    batched = greedy_generate(params, cfg, PROMPTS, N_NEW)
    alone = [greedy_generate(params, cfg, [p], N_NEW)[0] for p in PROMPTS]
    assert batched == alone


@pytest.mark.parametrize("mode", ["last", "cached", "all"])
def test_intervention_modes_match_their_definitions(tiny_models, mode):
    _, cfg, params = tiny_models["llama2"]
    scale = np.ones((cfg.n_layers, cfg.d_ff), np.float32)
    scale[:, ::3] = 0.0
    scale[1, 1::3] = 4.0
    gen = generate(params, cfg, PROMPTS[:2], N_NEW, scale=jnp.asarray(scale), mode=mode, capture="act")
    for b, prompt in enumerate(PROMPTS[:2]):
        defs = {m: _rerun(params, cfg, prompt, N_NEW, jnp.asarray(scale), m) for m in ("last", "cached", "all")}
        tokens, acts = defs.pop(mode)
        assert list(gen.tokens[b]) == tokens
        # Tokens of a tiny random model rarely move: the site read at each step tells the modes apart.
        np.testing.assert_allclose(np.asarray(gen.site)[:, :, b], acts, rtol=0, atol=1e-5)
        for other_tokens, other_acts in defs.values():
            assert other_tokens != tokens or np.abs(other_acts - acts).max() > 1e-4


def test_factor_one_is_a_noop_in_every_mode(tiny_models):
    _, cfg, params = tiny_models["llama3"]
    plain = generate(params, cfg, PROMPTS, N_NEW).tokens
    for mode in ("last", "cached", "all"):
        got = generate(params, cfg, PROMPTS, N_NEW, scale=jnp.ones((cfg.n_layers, cfg.d_ff)), mode=mode).tokens
        np.testing.assert_array_equal(got, plain)


def test_captured_site_equals_full_forward(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    gen = generate(params, cfg, PROMPTS[:1], N_NEW, capture="product")
    text = PROMPTS[0] + [int(t) for t in gen.tokens[0]]
    full = forward(params, np.asarray([text]), cfg, capture=("product",)).captures["product"]  # [L, 1, T, F]
    reads = np.arange(len(PROMPTS[0]) - 1, len(text) - 1)
    np.testing.assert_allclose(np.asarray(gen.site)[:, :, 0], np.moveaxis(np.asarray(full)[:, 0, reads], 1, 0),
                               atol=1e-5)


def test_stop_tokens_end_rows(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    free = greedy_generate(params, cfg, PROMPTS[:1], N_NEW)[0]
    stopped = greedy_generate(params, cfg, PROMPTS[:1], N_NEW, eos_id=free[2])[0]
    assert stopped == free[: free.index(free[2]) + 1]


def test_bad_arguments_are_named(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    with pytest.raises(ValueError, match="mode"):
        generate(params, cfg, PROMPTS, 2, mode="sometimes")
    with pytest.raises(ValueError, match="empty"):
        generate(params, cfg, [[]], 2)
    with pytest.raises(ValueError, match="shape"):
        generate(params, cfg, PROMPTS, 2, scale=jnp.ones((2, 2)))
