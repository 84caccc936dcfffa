"""The fast path equals the reference path (METHOD.md §8-§9): every option, padded batches, multi-token answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attribution_helpers import ANSWERS, PROMPTS, assert_batch_close

from jaxkn.attribution import AttributionConfig, attribute, attribute_ids


def both(params, cfg, prompts=PROMPTS, answers=ANSWERS, **kw):
    return [attribute_ids(params, cfg, prompts, answers, AttributionConfig(method=m, **kw))
            for m in ("reference", "fast")]


@pytest.mark.parametrize("site", ["product", "gate"])
@pytest.mark.parametrize("baseline", ["zero", "amig"])
def test_fast_equals_reference_sites_and_baselines(tiny_models, site, baseline):
    _, cfg, params = tiny_models["llama3"]  # GQA, tied embeddings, LLaMA-3 rope scaling
    ref, fast = both(params, cfg, site=site, baseline=baseline)
    assert_batch_close(ref.scores, fast.scores, 1e-5)
    np.testing.assert_allclose(fast.prob_baseline, ref.prob_baseline, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fast.prob_actual, ref.prob_actual, rtol=1e-5)


def test_fast_equals_reference_variants(tiny):
    _, cfg, params = tiny  # llama2, llama3, mistral (sliding window 4 < prompt length 9)
    ref, fast = both(params, cfg)
    assert_batch_close(ref.scores, fast.scores, 1e-5)
    np.testing.assert_allclose(fast.completeness_error, ref.completeness_error, atol=1e-6)


@pytest.mark.parametrize("quadrature,form", [("right", "difference"), ("linspace", "activation"),
                                             ("gauss_legendre", "activation")])
def test_fast_equals_reference_quadratures(tiny_models, quadrature, form):
    _, cfg, params = tiny_models["llama2"]
    ref, fast = both(params, cfg, quadrature=quadrature, steps=7, baseline="amig", baseline_form=form)
    assert_batch_close(ref.scores, fast.scores, 1e-5)


def test_fast_equals_reference_float64(tiny_models):
    """The identity is exact: in float64 the two schedules agree to rounding (1e-9)."""
    _, cfg, params = tiny_models["mistral"]
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params)
        ref, fast = both(p64, cfg, site="gate", baseline="amig", steps=5)
        assert ref.scores.dtype == jnp.float64
        assert_batch_close(ref.scores, fast.scores, 1e-9)


@pytest.mark.parametrize("group", [1, 2, 3])
def test_schedule_groups_and_layer_subsets(tiny_models, group):
    """Any grouping of layers into scans, and any layer subset in any order, gives the same attributions."""
    _, cfg, params = tiny_models["llama2"]
    full = attribute_ids(params, cfg, PROMPTS, ANSWERS, AttributionConfig(steps=5))
    part = attribute_ids(params, cfg, PROMPTS, ANSWERS, AttributionConfig(steps=5, layers=(2, 0),
                                                                         layers_per_group=group))
    assert part.layers == (2, 0) and part.scores.shape == (3, 2, cfg.d_ff)
    np.testing.assert_allclose(part.scores, np.asarray(full.scores)[:, [2, 0]], rtol=1e-5, atol=1e-10)


@pytest.mark.slow
def test_fast_equals_reference_smollm2(smollm2):
    """Real weights: top layers (the code path is the same for every layer), both sites and both baselines,
    a padded batch of a single- and a multi-token answer."""
    cfg, params, tok = smollm2
    prompts = ["The capital of France is", "The Eiffel Tower is located in the city of"]
    answers = ["Paris", "Paris, France"]
    for site, baseline in (("product", "zero"), ("gate", "amig")):
        kw = dict(site=site, baseline=baseline, steps=4, layers=(26, 29), layers_per_group=2)
        ref, fast = (attribute(params, cfg, tok, prompts, answers, AttributionConfig(method=m, **kw))
                     for m in ("reference", "fast"))
        assert ref.answer_mask.sum(axis=1).tolist() == [1, 3]
        # float32 rounding alone reaches ~1e-5 here (METHOD.md §9); the exact identity is proven in float64
        assert_batch_close(ref.scores, fast.scores, 1e-4)
