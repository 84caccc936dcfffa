"""The Flax NNX shell: same arrays as the params, calls that equal `forward` bit for bit, orbax in both forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from jaxkn.convert.checkpoint import save_checkpoint
from jaxkn.convert.loading import load_model
from jaxkn.convert.mapping import CheckpointError
from jaxkn.flax_model import (
    FlaxModel,
    abstract_flax_model,
    flax_model,
    load_flax_model,
    params_of,
    restore_into,
)
from jaxkn.model import forward
from jaxkn.site import scale_edit

TOKENS = jnp.asarray(np.random.RandomState(0).randint(0, 64, (2, 7)), jnp.int32)
VALID = jnp.asarray([[True] * 7, [False, False] + [True] * 5])  # a left-padded row


def _leaves_equal(a, b) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _edit(cfg):
    scale = jnp.ones((cfg.n_layers, cfg.d_ff)).at[1, :5].set(0.0).at[2, 7].set(3.0)
    return scale_edit(scale, jnp.ones(TOKENS.shape))


def test_module_holds_the_very_arrays_it_was_given(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    module = flax_model(cfg, params)
    assert isinstance(module, nnx.Module) and module.cfg == cfg
    got = params_of(module)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(params)):
        assert a is b and a.unsafe_buffer_pointer() == b.unsafe_buffer_pointer()
    assert module.layers["w_up"][...] is params["layers"]["w_up"]


def test_call_equals_forward_bitwise_with_edits_and_captures(tiny):
    _, cfg, params = tiny
    module = flax_model(cfg, params)
    kw = dict(valid=VALID, edits=_edit(cfg), capture=("product", "gate"), capture_at=jnp.asarray([[6], [6]]),
              logits_at=jnp.asarray([[5, 6], [5, 6]]))
    want = forward(params, TOKENS, cfg, **kw)
    got = module(TOKENS, **kw)
    _leaves_equal(got.captures, want.captures)
    np.testing.assert_array_equal(got.logits, want.logits)
    # Under jit both are one program: nnx.jit over the module compiles what jax.jit over forward does.
    jitted = jax.jit(lambda p, t: forward(p, t, cfg, **kw))(params, TOKENS)
    nnx_jitted = nnx.jit(lambda m, t: m(t, **kw))(module, TOKENS)
    _leaves_equal(nnx_jitted, jitted)
    unedited = module(TOKENS, **{**kw, "edits": ()}).logits
    assert unedited.shape == want.logits.shape and not np.array_equal(unedited, want.logits)  # the edit acts


def test_kv_and_plain_call_equal_forward(tiny_models):
    _, cfg, params = tiny_models["mistral"]
    _leaves_equal(flax_model(cfg, params)(TOKENS, return_kv=True), forward(params, TOKENS, cfg, return_kv=True))


def test_nnx_grad_equals_jax_grad_of_forward(tiny_models):
    _, cfg, params = tiny_models["llama3"]

    def loss(p):
        return forward(p, TOKENS, cfg).logits[:, -1, 3].sum()

    want = jax.jit(jax.grad(loss))(params)
    got = nnx.jit(nnx.grad(lambda m: m(TOKENS).logits[:, -1, 3].sum()))(flax_model(cfg, params))
    _leaves_equal(nnx.to_pure_dict(got), want)


def test_split_gives_the_params_and_merge_gives_the_module_back(tiny_models):
    _, cfg, params = tiny_models["llama3"]  # tied embeddings: no lm_head leaf
    graphdef, state = nnx.split(flax_model(cfg, params))
    _leaves_equal(nnx.to_pure_dict(state), params)
    assert "lm_head" not in nnx.to_pure_dict(state)
    merged = nnx.merge(graphdef, state)
    np.testing.assert_array_equal(merged(TOKENS).logits, forward(params, TOKENS, cfg).logits)


def test_jaxkn_checkpoint_restores_into_the_module(tiny_models, tmp_path):
    _, cfg, params = tiny_models["llama2"]
    save_checkpoint(tmp_path / "ck", cfg, params, None)
    module = restore_into(abstract_flax_model(cfg), tmp_path / "ck")
    _leaves_equal(params_of(module), params)
    loaded, tokenizer = load_flax_model(tmp_path / "ck")
    assert isinstance(loaded, FlaxModel) and tokenizer is None
    np.testing.assert_array_equal(loaded(TOKENS).logits, forward(params, TOKENS, cfg).logits)


def test_nnx_state_checkpoint_restores_into_module_and_back_to_a_jaxkn_checkpoint(tiny_models, tmp_path):
    _, cfg, params = tiny_models["mistral"]
    with ocp.StandardCheckpointer() as checkpointer:  # NNX's own way: save nnx.state (leaves under "value")
        checkpointer.save(tmp_path / "nnx", nnx.state(flax_model(cfg, params)))
        checkpointer.wait_until_finished()
    module = restore_into(abstract_flax_model(cfg), tmp_path / "nnx")
    _leaves_equal(params_of(module), params)
    save_checkpoint(tmp_path / "ck", cfg, params_of(module), None)  # and the module saves as a jaxkn checkpoint
    _leaves_equal(load_model(tmp_path / "ck")[1], params)


def test_restore_refuses_a_checkpoint_of_another_config(tiny_models, tmp_path):
    _, cfg, params = tiny_models["llama2"]
    save_checkpoint(tmp_path / "ck", cfg, params, None)
    with pytest.raises(CheckpointError, match="cannot restore"):
        restore_into(abstract_flax_model(cfg.replace(d_ff=2 * cfg.d_ff)), tmp_path / "ck")
    with pytest.raises(CheckpointError, match="not a jaxkn checkpoint folder"):
        load_flax_model(tmp_path)


def test_params_that_do_not_fit_the_config_are_refused(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    with pytest.raises(ValueError, match=r"\['layers'\]\['w_up'\] has shape \(3, 32, 47\)"):
        flax_model(cfg, {**params, "layers": {**params["layers"], "w_up": params["layers"]["w_up"][..., :-1]}})
    with pytest.raises(ValueError, match="params have tree"):
        flax_model(cfg, {k: v for k, v in params.items() if k != "lm_head"})


def test_display_renders(tiny_models, capsys):
    _, cfg, params = tiny_models["llama2"]
    module = flax_model(cfg, params)
    nnx.display(module)
    text = capsys.readouterr().out + repr(module)
    assert "FlaxModel" in text and "w_gate" in text and "Param" in text
