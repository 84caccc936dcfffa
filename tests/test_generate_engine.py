"""The decoding engine's options: per-row factors, a shared prefix, first-step logits, and their errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxkn.generate import generate
from jaxkn.model import forward

SHOTS = [7, 3, 11, 5, 2, 19, 23, 4, 8, 13]  # the prefix every prompt starts with
PROMPTS = [SHOTS + [9, 1, 30], SHOTS + [17, 6], SHOTS + [40, 12, 9, 33, 21]]
N_NEW = 5
MODES = ("last", "cached", "all")


def _factors(cfg, seed=0):
    """[3, L, F]: row 0 untouched, row 1 a third of the neurons suppressed, row 2 another third enhanced x3."""
    rng = np.random.default_rng(seed)
    factors = np.ones((3, cfg.n_layers, cfg.d_ff), np.float32)
    picks = rng.permutation(cfg.d_ff)
    factors[1][:, picks[: cfg.d_ff // 3]] = 0.0
    factors[2][:, picks[cfg.d_ff // 3: 2 * cfg.d_ff // 3]] = 3.0
    return factors


def _close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("same_prompt", [False, True])
def test_per_row_factors_equal_rows_decoded_alone(tiny_models, mode, same_prompt):
    # One prompt under every factor is the study's conditions batch (its prompt is prefilled once, then repeated).
    _, cfg, params = tiny_models["llama2"]
    factors = _factors(cfg)
    prompts = [PROMPTS[2]] * 3 if same_prompt else PROMPTS
    gen = generate(params, cfg, prompts, N_NEW, scale=factors, mode=mode, capture="product")
    logits = np.asarray(gen.first_logits)
    assert np.abs(logits[1] - logits[0]).max() > 1e-3  # the factors matter (else the test proves nothing)
    for row, (prompt, factor) in enumerate(zip(prompts, factors)):
        alone = generate(params, cfg, [prompt], N_NEW, scale=factor, mode=mode, capture="product")
        np.testing.assert_array_equal(gen.tokens[row], alone.tokens[0])
        _close(gen.first_logits[row], alone.first_logits[0])
        _close(np.asarray(gen.site)[:, :, row], np.asarray(alone.site)[:, :, 0])


@pytest.mark.parametrize("mode", MODES)
def test_shared_prefix_equals_no_prefix(tiny_models, mode):
    _, cfg, params = tiny_models["mistral"]  # sliding window 4 < prefix: positions and window must stay exact
    factors = _factors(cfg, seed=1)
    for scale in (None, factors[1], factors):  # none, one for every row, one per row (mode "all": prefix scaled)
        plain = generate(params, cfg, PROMPTS, N_NEW, scale=scale, mode=mode)
        shared = generate(params, cfg, PROMPTS, N_NEW, scale=scale, mode=mode, prefix=SHOTS)
        np.testing.assert_array_equal(shared.tokens, plain.tokens)
        _close(shared.first_logits, plain.first_logits)


@pytest.mark.parametrize("mode", MODES)
def test_factor_one_rows_are_bitwise_unscaled(tiny_models, mode):
    _, cfg, params = tiny_models["llama3"]
    factors = _factors(cfg)
    plain = generate(params, cfg, PROMPTS, N_NEW)
    ones = generate(params, cfg, PROMPTS, N_NEW, scale=np.ones_like(factors), mode=mode)
    np.testing.assert_array_equal(ones.tokens, plain.tokens)
    np.testing.assert_array_equal(np.asarray(ones.first_logits), np.asarray(plain.first_logits))
    mixed = generate(params, cfg, PROMPTS, N_NEW, scale=factors, mode=mode)  # row 0 has factor 1
    np.testing.assert_array_equal(mixed.tokens[0], plain.tokens[0])
    np.testing.assert_array_equal(np.asarray(mixed.first_logits)[0], np.asarray(plain.first_logits)[0])


def test_first_logits_are_the_prompts_next_token_logits(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    gen = generate(params, cfg, PROMPTS[:1], 2)
    full = forward(params, np.asarray(PROMPTS[:1]), cfg).logits[0, -1]
    assert gen.first_logits.dtype == jnp.float32 and gen.first_logits.shape == (1, cfg.vocab_size)
    _close(gen.first_logits[0], full)


def test_cached_is_another_intervention_than_last(tiny_models):
    # "last" keeps an unscaled pass's keys/values for the newest token, "cached" keeps the scaled ones: the same
    # first step (the prompt is unscaled in both), then other activations once generated tokens are attended to.
    _, cfg, params = tiny_models["llama2"]
    factors = _factors(cfg)
    factors[1] = 0.0  # every neuron of row 1 off: the keys/values of its generated tokens change a lot
    last = generate(params, cfg, PROMPTS, 4, scale=factors, mode="last", capture="act")
    cached = generate(params, cfg, PROMPTS, 4, scale=factors, mode="cached", capture="act")
    np.testing.assert_array_equal(last.tokens, cached.tokens)  # same context, so sites compare like for like
    _close(last.first_logits, cached.first_logits, atol=1e-6)
    site_last, site_cached = np.asarray(last.site), np.asarray(cached.site)  # [N, L, B, F]
    _close(site_last[0], site_cached[0], atol=1e-6)
    _close(site_last[:, :, 0], site_cached[:, :, 0], atol=1e-6)  # factor 1: no difference
    # Layer 0's site reads only the token itself; above it a step attends to earlier generated tokens (a tiny
    # random model moves little: ~1e-3 here, still 1000x the 1e-6 the equal parts agree to).
    assert np.abs(site_last[1:, 1:, 1:] - site_cached[1:, 1:, 1:]).max() > 1e-4


def test_bad_scale_and_prefix_are_named(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    with pytest.raises(ValueError, match=r"scale must have shape .*\(B, L, F\) = \(3, "):
        generate(params, cfg, PROMPTS, 2, scale=np.ones((4, cfg.n_layers, cfg.d_ff)))
    with pytest.raises(ValueError, match="prompt 1 does not start with the shared prefix"):
        generate(params, cfg, [PROMPTS[0], [1] + PROMPTS[1]], 2, prefix=SHOTS)
    with pytest.raises(ValueError, match="prompt 0 has 1 token.* after the shared prefix"):
        generate(params, cfg, [SHOTS + [5], PROMPTS[1]], 2, prefix=SHOTS)
