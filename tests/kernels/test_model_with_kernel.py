"""The model with `mlp_impl="pallas_interpret"` computes what it computes with `mlp_impl="xla"`: logits, logits
under neuron rescalings, and the gradient the attribution engine takes with respect to the rescaling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkn.kernels.dispatch import combined_scale, mlp_with_edits
from jaxkn.model import forward, layer_slice
from jaxkn.site import SiteEdit, scale_edit

BATCH, TOKENS = 2, 6


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def llama2(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    tokens = jax.random.randint(jax.random.PRNGKey(0), (BATCH, TOKENS), 0, cfg.vocab_size)
    return cfg, params, tokens


def random_scale_edit(cfg, seed, last_only=True):
    scale = jax.random.uniform(jax.random.PRNGKey(seed), (cfg.n_layers, cfg.d_ff), minval=0.0, maxval=2.0)
    where = jnp.zeros((BATCH, TOKENS)).at[:, -1].set(1.0) if last_only else jnp.ones((BATCH, TOKENS))
    return scale_edit(scale, where)


def logits(cfg, params, tokens, impl, edits=None):
    return jax.jit(lambda p, e: forward(p, tokens, cfg.replace(mlp_impl=impl), edits=e).logits)(params, edits)


def test_logits_match_xla(llama2):
    cfg, params, tokens = llama2
    want = logits(cfg, params, tokens, "xla")
    assert rel_err(logits(cfg, params, tokens, "pallas_interpret"), want) <= 1e-5


def test_logits_under_rescalings_match_xla(llama2):
    """One edit at the last position, and two composed edits (the kernel multiplies their factors)."""
    cfg, params, tokens = llama2
    for edits in [random_scale_edit(cfg, 1), (random_scale_edit(cfg, 2), random_scale_edit(cfg, 3, False))]:
        want = logits(cfg, params, tokens, "xla", edits)
        plain = logits(cfg, params, tokens, "xla")
        assert rel_err(want, plain) > 1e-3, "degenerate test: the edit must change the logits"
        assert rel_err(logits(cfg, params, tokens, "pallas_interpret", edits), want) <= 1e-5


def test_gradient_with_respect_to_scale_matches_xla(llama2):
    """What integrated gradients differentiates: P(target) at the last position w.r.t. the edit's scale."""
    cfg, params, tokens = llama2
    edit = random_scale_edit(cfg, 4)
    target = jnp.array([3, 7])

    def grad_for(impl):
        def prob(scale):
            out = forward(params, tokens, cfg.replace(mlp_impl=impl), edits=SiteEdit(
                scale=scale, shift=None, where=edit.where, site="product"))
            probs = jax.nn.softmax(out.logits[:, -1], axis=-1)
            return jnp.take_along_axis(probs, target[:, None], axis=1).sum()

        return jax.jit(jax.grad(prob))(edit.scale)

    want = grad_for("xla")
    assert np.abs(np.asarray(want)).max() > 0
    assert rel_err(grad_for("pallas_interpret"), want) <= 1e-5


def test_edits_the_kernel_cannot_take_fall_back_to_xla(llama2):
    cfg, params, tokens = llama2
    lp = layer_slice(params, 0)
    x = jax.random.normal(jax.random.PRNGKey(5), (BATCH, TOKENS, cfg.d_model))
    slice0 = lambda e: jax.tree_util.tree_map(lambda a: a[0], e)  # noqa: E731
    base = random_scale_edit(cfg, 6)
    shifted = SiteEdit(scale=base.scale, shift=jnp.ones_like(base.scale), where=base.where)
    gate_site = SiteEdit(scale=base.scale, shift=None, where=base.where, site="gate")
    interp = cfg.replace(mlp_impl="pallas_interpret")
    for edit in (shifted, gate_site):
        assert mlp_with_edits(interp, lp, x, (slice0(edit),)) is None
        want = logits(cfg, params, tokens, "xla", edit)
        assert np.array_equal(logits(cfg, params, tokens, "pallas_interpret", edit), want)
    assert combined_scale((), BATCH, TOKENS, cfg.d_ff) is None  # no edits: no ones array


def test_compiled_pallas_on_cpu_names_the_alternatives(llama2):
    cfg, params, tokens = llama2
    if jax.default_backend() != "cpu":
        pytest.skip("the error is specific to CPU")
    with pytest.raises(ValueError, match="pallas_interpret"):
        forward(params, tokens, cfg.replace(mlp_impl="pallas"))
