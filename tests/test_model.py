"""The Flax-free LLaMA/Mistral forward pass against transformers, and the neuron seam's invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxkn.config import ModelConfig, UnsupportedConfigError
from jaxkn.model import ContextLengthError, forward, init_params, param_shapes
from jaxkn.site import SiteEdit, scale_edit

TOKENS = np.random.RandomState(0).randint(0, 64, size=(3, 12))
LENGTHS = [12, 7, 4]


def hf_logits(hf, tokens):
    with torch.no_grad():
        return hf(torch.tensor(np.asarray(tokens))).logits.numpy()


def padded_batch(side: str):
    tokens = np.zeros_like(TOKENS)
    valid = np.zeros(TOKENS.shape, bool)
    for row, n in enumerate(LENGTHS):
        cols = slice(0, n) if side == "right" else slice(TOKENS.shape[1] - n, None)
        tokens[row, cols] = TOKENS[row, :n]
        valid[row, cols] = True
    return tokens, valid


@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_match_transformers_on_padded_batches(tiny, side):
    hf, cfg, params = tiny
    tokens, valid = padded_batch(side)
    logits = np.asarray(forward(params, tokens, cfg, valid=valid).logits)
    for row, n in enumerate(LENGTHS):
        ref = hf_logits(hf, TOKENS[row : row + 1, :n])[0]
        got = logits[row][valid[row]]
        assert np.abs(got - ref).max() <= 1e-4


def test_sliding_window_is_active_in_the_test_prompt(tiny_models):
    """Mistral's window (4) is shorter than the prompt, so the window changes the logits."""
    hf, cfg, params = tiny_models["mistral"]
    windowed = np.asarray(forward(params, TOKENS, cfg).logits)
    full = np.asarray(forward(params, TOKENS, cfg.replace(sliding_window=None)).logits)
    assert np.abs(windowed - full).max() > 1e-3
    assert np.abs(windowed - hf_logits(hf, TOKENS)).max() <= 1e-4


def test_logits_at_gathers_only_requested_positions(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    full = forward(params, TOKENS, cfg).logits
    at = jnp.asarray([[11], [6], [3]])
    picked = forward(params, TOKENS, cfg, logits_at=at).logits
    np.testing.assert_array_equal(np.asarray(picked[:, 0]), np.asarray(full)[np.arange(3), at[:, 0]])


def test_factor_one_intervention_is_bit_identical(tiny):
    _, cfg, params = tiny
    plain = forward(params, TOKENS, cfg).logits
    for site in ("product", "gate", "act"):
        edit = scale_edit(jnp.ones((cfg.n_layers, cfg.d_ff)), jnp.ones(TOKENS.shape), site=site)
        np.testing.assert_array_equal(np.asarray(forward(params, TOKENS, cfg, edits=edit).logits), np.asarray(plain))


def test_factor_zero_on_a_layer_equals_zeroing_down_input_in_torch(tiny):
    hf, cfg, params = tiny
    layer = 1
    scale = jnp.ones((cfg.n_layers, cfg.d_ff)).at[layer].set(0.0)
    got = forward(params, TOKENS, cfg, edits=scale_edit(scale, jnp.ones(TOKENS.shape))).logits

    def zero_input(module, args):
        return (torch.zeros_like(args[0]),)

    handle = hf.model.layers[layer].mlp.down_proj.register_forward_pre_hook(zero_input)
    try:
        ref = hf_logits(hf, TOKENS)
    finally:
        handle.remove()
    assert np.abs(np.asarray(got) - ref).max() <= 1e-4


def test_edits_compose_in_order(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    key = jax.random.PRNGKey(1)
    a = jax.random.uniform(key, (cfg.n_layers, cfg.d_ff), minval=0.5, maxval=1.5)
    b = jax.random.uniform(jax.random.fold_in(key, 1), (cfg.n_layers, cfg.d_ff), minval=0.5, maxval=1.5)
    where = jnp.ones(TOKENS.shape)
    both = forward(params, TOKENS, cfg, edits=(scale_edit(a, where), scale_edit(b, where))).logits
    product = forward(params, TOKENS, cfg, edits=scale_edit(a * b, where)).logits
    np.testing.assert_allclose(np.asarray(both), np.asarray(product), atol=1e-5)


def test_captures_return_the_site_tensors(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    out = forward(params, TOKENS, cfg, capture=("gate", "act", "product"), capture_at=jnp.asarray([[11]] * 3))
    gate, act = np.asarray(out.captures["gate"]), np.asarray(out.captures["act"])
    assert gate.shape == (cfg.n_layers, 3, 1, cfg.d_ff)
    np.testing.assert_allclose(act, np.asarray(jax.nn.silu(gate)), atol=1e-6)


def test_bfloat16_params_run_and_agree_roughly(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    bf_cfg = cfg.replace(param_dtype="bfloat16")
    bf = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    got = forward(bf, TOKENS, bf_cfg).logits
    assert got.dtype == jnp.bfloat16
    ref = np.asarray(forward(params, TOKENS, cfg).logits)
    assert np.abs(np.asarray(got, np.float32) - ref).max() <= 0.05 * np.abs(ref).max()


def test_prompt_longer_than_context_is_rejected(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    with pytest.raises(ContextLengthError, match="longer than the model's context"):
        forward(params, np.zeros((1, cfg.max_position_embeddings + 1), np.int32), cfg)


def test_real_size_shapes_without_memory():
    cfg = ModelConfig(vocab_size=32000, d_model=4096, d_ff=11008, n_layers=32, n_heads=32, n_kv_heads=32,
                      head_dim=128, param_dtype="bfloat16")
    abstract = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.PRNGKey(0))
    out = jax.eval_shape(lambda p: forward(p, jnp.zeros((1, 16), jnp.int32), cfg).logits, abstract)
    assert out.shape == (1, 16, 32000)
    n = sum(int(np.prod(s)) for s in jax.tree_util.tree_leaves(param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple)))
    assert abs(n - 6.74e9) / 6.74e9 < 0.01  # LLaMA-2-7B's parameter count


@pytest.mark.parametrize("change,match", [
    (dict(model_type="gpt2"), "unsupported architecture"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(rope_parameters=dict(rope_type="dynamic", factor=2.0, rope_theta=1e4)), "rope type 'dynamic'"),
    (dict(rope_scaling=dict(rope_type="yarn", factor=2.0)), "conflicting rope settings"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(some_new_option=3), "some_new_option"),
    (dict(num_key_value_heads=3), "multiple of n_kv_heads"),
])
def test_unsupported_hf_configs_are_named(tiny_models, change, match):
    hf_dict = tiny_models["llama2"][0].config.to_dict()
    hf_dict.update(change)
    with pytest.raises(UnsupportedConfigError, match=match):
        ModelConfig.from_hf_dict(hf_dict)


def test_edit_validates_site():
    with pytest.raises(ValueError, match="unknown neuron site"):
        SiteEdit(scale=jnp.ones((1, 1, 1, 2)), shift=None, where=jnp.ones((1, 1, 1, 1)), site="resid")
