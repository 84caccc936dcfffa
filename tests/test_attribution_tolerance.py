"""Converged mode (METHOD.md §3): per-layer tolerance, flagged layers, fast == reference, chunked == unchunked."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attribution_helpers import ANSWERS, PROMPTS, assert_batch_close

from jaxkn.attribution import (
    AttributionConfig,
    attribute_ids,
    completeness_summary,
    map_point_chunks,
    quadrature_rule,
    refined_rule,
)


def near_jump(t):
    """A path like SmolLM2's layer 0 (METHOD.md §3): a dip from 0.29 to ~0, then a jump (slope ~30) to 0.92."""
    return 0.29 - 0.28 * jax.nn.sigmoid((t - 0.05) / 0.01) + 0.91 * jax.nn.sigmoid((t - 0.125) / 0.007)


def test_adaptive_panels_converge_on_a_near_jump_where_left_riemann_fails():
    """The rounds converged mode runs (the fixed rule, then refined rules from each round's samples) meet 0.01
    on a steep integrand within 256 points; left Riemann m = 20 misses it by far."""
    with jax.enable_x64(True):
        slope = jax.vmap(jax.grad(near_jump))
        exact = float(near_jump(1.0) - near_jump(0.0))

        def riemann_error(m):
            t, w = quadrature_rule("left", m)
            return abs(float(jnp.sum(w * slope(jnp.asarray(t)))) - exact)

        assert riemann_error(20) > 0.3
        t, _ = quadrature_rule("left", 20)
        samples = jnp.concatenate([jnp.asarray(t), jnp.ones(1)])
        errors = {}
        for n_points in (32, 64, 128, 256):
            nodes, weights = refined_rule(samples, near_jump(samples), n_points)
            assert nodes.dtype == jnp.float64 and np.all(np.diff(np.asarray(nodes)) > 0)
            errors[n_points] = abs(float(jnp.sum(weights * slope(nodes))) - exact)
            samples = jnp.concatenate([jnp.zeros(1), nodes, jnp.ones(1)])
        print(errors)
        assert min(errors.values()) <= 0.01, errors
        assert errors[256] <= 1e-4 and errors[256] < errors[32], errors
        # a flat path gives uniform panels: composite Gauss-Legendre, exact for polynomials of degree 7
        nodes, weights = refined_rule(jnp.linspace(0, 1, 5), jnp.full(5, 0.3), 8)
        assert np.isclose(float(jnp.sum(weights * nodes**7)), 1 / 8, rtol=1e-12)


@pytest.fixture(scope="module")
def sharp(tiny_models):
    """llama2 tiny with layer 0's down projection and the LM head scaled up: layer 0's path is much steeper
    than layers 1-2's, so its completeness error at a cheap rule is 1e-4 to 1e-2, theirs below 1e-6."""
    _, cfg, params = tiny_models["llama2"]
    p = dict(params, layers=dict(params["layers"]), lm_head=params["lm_head"] * 10)
    p["layers"]["w_down"] = params["layers"]["w_down"].at[0].multiply(100)
    return cfg, p


def run(params, cfg, **kw):
    return attribute_ids(params, cfg, PROMPTS, ANSWERS, AttributionConfig(steps=4, **kw))


def test_tolerance_mode_meets_tolerance_where_needed_and_equals_reference(sharp):
    cfg, params = sharp
    fixed = run(params, cfg)
    tol = 1e-5
    assert np.asarray(fixed.completeness_error)[:, 0].min() > 10 * tol  # the cheap rule misses at layer 0
    assert np.asarray(fixed.completeness_error)[:, 1:].max() < tol
    fast, ref = (run(params, cfg, tolerance=tol, method=m) for m in ("fast", "reference"))
    for out in (fast, ref):
        error, points = np.asarray(out.completeness_error), np.asarray(out.points_per_layer)
        assert not np.asarray(out.flagged).any() and error.max() <= tol
        assert (points[:, 0] > 4).all() and (points[:, 1:] == 4).all()  # only layer 0 got more points
        # layers that met the tolerance at the first round keep the fixed rule's result
        np.testing.assert_array_equal(np.asarray(out.scores)[:, 1:], np.asarray(run(
            params, cfg, method=out.config.method).scores)[:, 1:])
    np.testing.assert_array_equal(fast.points_per_layer, ref.points_per_layer)
    assert_batch_close(ref.scores, fast.scores, 1e-4)
    summary = completeness_summary([fast])
    assert summary["flagged_layers"] == 0 and summary["max"] <= tol
    assert summary["points_per_layer"] == np.asarray(fast.points_per_layer).max(0).tolist()


def test_too_small_budget_flags_layers(sharp):
    """A budget that cannot meet the tolerance reports the layer as flagged, with the points it spent."""
    cfg, params = sharp
    tol = 1e-12  # below float32 rounding: no budget meets it
    out = run(params, cfg, tolerance=tol, max_points_per_layer=16)
    flagged, error = np.asarray(out.flagged), np.asarray(out.completeness_error)
    np.testing.assert_array_equal(flagged, error > tol)
    assert flagged.all() and (np.asarray(out.points_per_layer) == 16).all()
    summary = completeness_summary([out, out])
    assert summary["flagged_layers"] == 2 * flagged.size and summary["points_per_layer"] == [16] * 3
    fixed = run(params, cfg, tolerance=tol, max_points_per_layer=4)  # no refinement round fits: still flagged
    assert np.asarray(fixed.flagged).all() and (np.asarray(fixed.points_per_layer) == 4).all()
    plain = run(params, cfg)
    assert not np.asarray(plain.flagged).any() and (np.asarray(plain.points_per_layer) == 4).all()


def test_tolerance_mode_float64_fast_equals_reference(tiny_models):
    """The refinement rounds are exact rewrites in both schedules: float64 agreement at 1e-9."""
    _, cfg, params = tiny_models["mistral"]
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params)
        fast, ref = (run(p64, cfg, tolerance=1e-12, max_points_per_layer=8, layers=(2, 0), method=m)
                     for m in ("fast", "reference"))
        assert fast.scores.dtype == jnp.float64 and (np.asarray(fast.points_per_layer) == 8).all()
        assert_batch_close(ref.scores, fast.scores, 1e-9)


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_point_chunks_equal_one_chunk(sharp, method):
    """Both rounds chunked (5 first-round points in 2 chunks, 8 and 16 refinement points in 3 and 6, padded)
    give the unchunked numbers."""
    cfg, params = sharp
    whole = run(params, cfg, method=method, tolerance=3e-6, point_chunk=100)
    chunked = run(params, cfg, method=method, tolerance=3e-6, point_chunk=3)
    assert np.asarray(whole.points_per_layer).max() == 16
    np.testing.assert_array_equal(chunked.points_per_layer, whole.points_per_layer)
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=1e-5, atol=1e-7 * np.abs(whole.scores).max())
    np.testing.assert_allclose(chunked.prob_baseline, whole.prob_baseline, rtol=1e-6)


def test_map_point_chunks_restores_order_and_drops_padding():
    nodes = jnp.arange(2 * 7, dtype=jnp.float32).reshape(2, 7)

    def fn(t):  # outputs with the point axis in place, plus a trailing axis
        return t * 2, jnp.stack([t, -t], -1)

    for chunk in (1, 3, 7, 9):
        doubled, pair = map_point_chunks(fn, nodes, chunk)
        np.testing.assert_array_equal(doubled, nodes * 2)
        np.testing.assert_array_equal(pair, jnp.stack([nodes, -nodes], -1))


def test_config_validation():
    for bad in (dict(tolerance=0.0), dict(tolerance=-1.0), dict(max_points_per_layer=10, steps=20),
                dict(point_chunk=0)):
        with pytest.raises(ValueError, match="AttributionConfig"):
            AttributionConfig(**bad)
    assert AttributionConfig(tolerance=0.01).refinement_points() == (32, 64, 128, 256)
    assert AttributionConfig(tolerance=0.01, steps=1, max_points_per_layer=100).refinement_points() == (8, 16, 32, 64)
    assert AttributionConfig().refinement_points() == ()


@pytest.mark.slow
def test_smollm2_layer0_converges_where_left_riemann_fails(smollm2):
    """METHOD.md §3: on a 3-shot prompt SmolLM2's layer 0 has a near-jump path; left m = 20 leaves a completeness
    error far above 0.01 there, converged mode brings layers 0 and 1 under 0.01."""
    from jaxkn.attribution import attribute
    from jaxkn.data import builtin_items, format_prompt
    from jaxkn.data.prompts import COT_STYLES

    cfg, params, tok = smollm2
    # a query whose layer-0 path has a near-jump (left m = 20 misses completeness by ~0.6 here)
    item = next(it for it in builtin_items() if it.fact1_query[0] == "In which country is Ghazni?")
    prompt = format_prompt(item.fact1_query[0], COT_STYLES["none"])
    kw = dict(layers=(0, 1))
    fixed = attribute(params, cfg, tok, [prompt], item.fact1_ans, AttributionConfig(**kw))
    conv = attribute(params, cfg, tok, [prompt], item.fact1_ans, AttributionConfig(tolerance=0.01, **kw))
    print("fixed", np.asarray(fixed.completeness_error), "converged", np.asarray(conv.completeness_error),
          np.asarray(conv.points_per_layer))
    assert float(fixed.completeness_error[0, 0]) > 0.1
    assert float(conv.completeness_error[0].max()) <= 0.01 and not np.asarray(conv.flagged).any()
    assert int(conv.points_per_layer[0, 0]) > 20
