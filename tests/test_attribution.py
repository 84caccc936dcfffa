"""Attribution API: quadrature rules, completeness, multi-token averaging, padding, tokenization, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from attribution_helpers import ANSWERS, PROMPTS, relative_error

from jaxkn.attribution import (
    AttributionConfig,
    AttributionInputError,
    answer_token_ids,
    attribute,
    attribute_ids,
    make_batch,
    quadrature_rule,
)
from jaxkn.model import ContextLengthError, forward


@pytest.mark.parametrize("name", ["left", "right", "linspace", "gauss_legendre"])
def test_quadrature_rules(name):
    nodes, weights = quadrature_rule(name, 8)
    assert nodes.min() >= 0 and nodes.max() <= 1 and np.isclose(weights.sum(), 1.0)
    exact = {"gauss_legendre": 1 / 16, "left": None}.get(name)
    if exact is not None:  # 8 Gauss-Legendre points integrate t^15 exactly
        assert np.isclose((weights * nodes**15).sum(), exact, rtol=1e-12)
    expected = {"left": np.arange(8) / 8, "right": np.arange(1, 9) / 8, "linspace": np.linspace(0, 1, 8)}
    if name in expected:
        np.testing.assert_array_equal(nodes, expected[name])


def test_completeness_and_probabilities(tiny_models):
    """With an accurate rule, sum_i Attr(l, i) = P(a) - P(b) per layer; P(a) is the model's own probability."""
    _, cfg, params = tiny_models["llama2"]
    result = attribute_ids(params, cfg, PROMPTS, ANSWERS, AttributionConfig(quadrature="gauss_legendre", steps=12))
    delta = np.abs(np.asarray(result.prob_actual).sum(1)[:, None] - np.asarray(result.prob_baseline).sum(2))
    assert np.asarray(result.completeness_error).max() <= 1e-3 * delta.max()
    logits = forward(params, np.array([[1, 22, 3, 30, 31]]), cfg).logits[0]
    probs = np.asarray(jax_softmax(logits))[[2, 3, 4], [30, 31, 12]]
    np.testing.assert_allclose(np.asarray(result.prob_actual)[1], probs, rtol=1e-5)


def jax_softmax(x):
    import jax

    return jax.nn.softmax(x, axis=-1)


def test_multi_token_is_mean_of_teacher_forced_single_tokens(tiny_models):
    _, cfg, params = tiny_models["llama3"]
    multi = attribute_ids(params, cfg, [[1, 22, 3]], [[30, 31, 12]], AttributionConfig(steps=6))
    singles = attribute_ids(params, cfg, [[1, 22, 3], [1, 22, 3, 30], [1, 22, 3, 30, 31]], [[30], [31], [12]],
                            AttributionConfig(steps=6))
    assert relative_error(np.asarray(singles.scores).mean(0), multi.scores[0]) <= 1e-5


def test_result_does_not_depend_on_batch(tiny_models):
    """A prompt alone (short bucket) and inside a padded batch (longer bucket, other rows) gives the same scores."""
    _, cfg, params = tiny_models["mistral"]
    alone = attribute_ids(params, cfg, [PROMPTS[1]], [ANSWERS[1]], AttributionConfig(steps=4, baseline="amig"))
    batch = attribute_ids(params, cfg, PROMPTS + [[7] * 12], ANSWERS + [[3]],
                          AttributionConfig(steps=4, baseline="amig"))
    assert make_batch(cfg, [PROMPTS[1]], [ANSWERS[1]]).tokens.shape[1] == 8
    assert relative_error(alone.scores[0], batch.scores[1]) <= 1e-5


def test_baseline_forms(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    kw = dict(baseline="amig", steps=4, method="reference")
    diff = attribute_ids(params, cfg, PROMPTS[:1], ANSWERS[:1], AttributionConfig(**kw))
    act = attribute_ids(params, cfg, PROMPTS[:1], ANSWERS[:1], AttributionConfig(baseline_form="activation", **kw))
    assert not np.allclose(diff.scores, act.scores)
    zero = [attribute_ids(params, cfg, PROMPTS[:1], ANSWERS[:1], AttributionConfig(steps=4, baseline_form=f))
            for f in ("difference", "activation")]
    np.testing.assert_array_equal(zero[0].scores, zero[1].scores)  # a - 0 == a


def test_bad_inputs(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    with pytest.raises(AttributionInputError, match="no prompts"):
        attribute_ids(params, cfg, [], [])
    with pytest.raises(AttributionInputError, match="2 prompts but 1 answers"):
        attribute_ids(params, cfg, [[1, 2], [3]], [[4]])
    with pytest.raises(AttributionInputError, match="answer 0 has no tokens"):
        attribute_ids(params, cfg, [[1, 2]], [[]])
    with pytest.raises(AttributionInputError, match="prompt 0 has no tokens"):
        attribute_ids(params, cfg, [[]], [[1]])
    with pytest.raises(AttributionInputError, match="outside the vocabulary"):
        attribute_ids(params, cfg, [[1, 2]], [[cfg.vocab_size]])
    with pytest.raises(ContextLengthError, match="longer than the model's context"):
        attribute_ids(params, cfg, [[1] * 120], [[2] * 10])
    with pytest.raises(ValueError, match="do not exist"):
        attribute_ids(params, cfg, [[1, 2]], [[3]], AttributionConfig(layers=(5,)))
    with pytest.raises(ValueError, match="needs cfg.eos_token_id"):
        attribute_ids(params, cfg.replace(eos_token_id=None), [[1, 2]], [[3]], AttributionConfig(baseline="amig"))
    for bad in (dict(site="post"), dict(quadrature="simpson"), dict(steps=0), dict(layers=(1, 1)),
                dict(method="slow"), dict(baseline_form="ratio")):
        with pytest.raises(ValueError, match="AttributionConfig"):
            AttributionConfig(**bad)


@pytest.mark.slow
def test_answer_tokens_smollm2(smollm2):
    cfg, params, tok = smollm2
    prompt_ids, answer_ids = answer_token_ids(tok, "The capital of France is", "Paris")
    assert answer_ids == tok.encode(" Paris") and len(answer_ids) == 1
    assert tok.bos_id not in answer_ids
    # prompt ending in a space: its tokens are not a prefix of the joint tokenization -> answer alone
    assert answer_token_ids(tok, "The capital of France is ", "Paris")[1] == answer_ids
    assert len(answer_token_ids(tok, "The Eiffel Tower is in", "Paris, France")[1]) == 3
    with pytest.raises(AttributionInputError, match="tokenizes to no token"):
        answer_token_ids(tok, "The capital of France is", "  ")
    with pytest.raises(ContextLengthError):
        attribute(params, cfg, tok, ["word " * 8200], "Paris", AttributionConfig(steps=1, layers=(29,)))
    with pytest.raises(AttributionInputError, match="2 prompts but 3 answers"):
        attribute(params, cfg, tok, ["a", "b"], ["x", "y", "z"])
