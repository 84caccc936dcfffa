"""The model with `mlp_impl="pallas_interpret"` computes what it computes with `mlp_impl="xla"`: logits, logits
under neuron rescalings, and the gradient the attribution engine takes with respect to the rescaling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkn.kernels.dispatch import combined_terms, mlp_with_edits
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


def shifted_edit(cfg, seed):
    edit = random_scale_edit(cfg, seed)
    shift = 0.5 * jax.random.normal(jax.random.PRNGKey(seed), (cfg.n_layers, BATCH, 1, cfg.d_ff))
    return SiteEdit(scale=edit.scale, shift=shift, where=edit.where)


def test_logits_under_edits_match_xla(llama2):
    """A rescaling at the last position; two composed rescalings; rescalings composed with a shift."""
    cfg, params, tokens = llama2
    for edits in [random_scale_edit(cfg, 1), (random_scale_edit(cfg, 2), random_scale_edit(cfg, 3, False)),
                  (random_scale_edit(cfg, 2, False), shifted_edit(cfg, 9), random_scale_edit(cfg, 3))]:
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
    gate_site = SiteEdit(scale=base.scale, shift=None, where=base.where, site="gate")
    act_site = SiteEdit(scale=base.scale, shift=jnp.ones_like(base.scale), where=base.where, site="act")
    interp = cfg.replace(mlp_impl="pallas_interpret")
    for edit in (gate_site, act_site):
        assert mlp_with_edits(interp, lp, x, (slice0(edit),)) is None
        want = logits(cfg, params, tokens, "xla", edit)
        assert np.array_equal(logits(cfg, params, tokens, "pallas_interpret", edit), want)
    assert combined_terms((), BATCH, TOKENS, cfg.d_ff) == (None, None)  # no edits: no ones array


def test_compiled_pallas_on_cpu_names_the_alternatives(llama2):
    cfg, params, tokens = llama2
    if jax.default_backend() != "cpu":
        pytest.skip("the error is specific to CPU")
    with pytest.raises(ValueError, match="pallas_interpret"):
        forward(params, tokens, cfg.replace(mlp_impl="pallas"))


def test_attributions_match_xla(llama2):
    """The attribution engine (its edits: scale t, shift (1 - t) b + probe) through the kernel and through XLA."""
    attribution = pytest.importorskip("jaxkn.attribution", reason="the attribution engine is not in this checkout")
    cfg, params, _ = llama2
    # the fast path (the hot path); the reference path builds the same edits through `forward`
    config = attribution.AttributionConfig(steps=3, method="fast", layers=(1,))
    prompts, answers = [[1, 5, 9, 3], [2, 8, 4]], [[7], [11, 6]]

    def scores(impl):
        return attribution.attribute_ids(params, cfg.replace(mlp_impl=impl), prompts, answers, config).scores

    want = scores("xla")
    assert np.abs(np.asarray(want)).max() > 0
    assert rel_err(scores("pallas_interpret"), want) <= 1e-5


def test_interventions_match_xla(llama2):
    """Enhance/suppress effects, a vmapped factor sweep and generation under an intervention, both impls."""
    from jaxkn.interventions import answer_probability, generate_under, suppress, sweep_factors

    cfg, params, tokens = llama2
    prompt, target = [int(t) for t in tokens[0]], [5, 9]
    neurons = [(0, 3), (1, 7), (2, 11), (2, 40)]
    results = {}
    for impl in ("xla", "pallas_interpret"):
        c = cfg.replace(mlp_impl=impl)
        results[impl] = (
            answer_probability(params, c, prompt, target, suppress(neurons, c)).per_token,
            sweep_factors(params, c, prompt, target, neurons, [0.0, 0.5, 2.0, 4.0]).per_token,
            generate_under(params, c, [prompt], 4, suppress(neurons, c)).tokens,
        )
    for got, want in zip(results["pallas_interpret"][:2], results["xla"][:2]):
        assert rel_err(got, want) <= 1e-5
    np.testing.assert_array_equal(results["pallas_interpret"][2], results["xla"][2])
