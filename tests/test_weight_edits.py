"""Weight edits: erasing equals suppressing at every position, params are never mutated, editing toward a
token raises its probability, and bad inputs are named."""

import jax
import numpy as np
import pytest

from jaxkn import interventions as iv
from jaxkn import weight_edits as edits
from jaxkn.model import forward
from jaxkn.recall import site_activations

PROMPT = [5, 9, 13, 2, 7, 30, 11]
NEURONS = [(0, 3), (1, 7), (1, 40), (2, 11)]


def snapshot(params):
    return jax.tree_util.tree_map(lambda a: np.array(a, copy=True), params)


def assert_same_tree(a, b):
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_erase_equals_suppress_at_all_positions(tiny):
    _, cfg, params = tiny
    before = snapshot(params)
    erased = edits.erase_neurons(params, NEURONS)
    assert_same_tree(params, before)  # the input is untouched
    tokens = np.asarray([PROMPT])
    suppressed = forward(params, tokens, cfg, edits=iv.site_edits(
        iv.suppress(NEURONS, cfg, positions="all"), np.ones_like(tokens, bool))).logits
    got = forward(erased, tokens, cfg).logits
    np.testing.assert_allclose(np.asarray(got), np.asarray(suppressed), rtol=0, atol=1e-6)
    w = np.array(erased["layers"]["w_down"])
    assert not w[[l for l, _ in NEURONS], [i for _, i in NEURONS]].any()
    # Only the erased rows changed.
    w[[l for l, _ in NEURONS], [i for _, i in NEURONS]] = before["layers"]["w_down"][
        [l for l, _ in NEURONS], [i for _, i in NEURONS]]
    np.testing.assert_array_equal(w, before["layers"]["w_down"])


def test_erase_with_unknown_token_direction(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    erased = edits.erase_neurons(params, NEURONS, mode="unk", unk_token_id=0)
    for layer, index in NEURONS:
        np.testing.assert_array_equal(np.asarray(erased["layers"]["w_down"][layer, index]),
                                      np.asarray(params["embed"][0]))


def test_edit_moves_probability_toward_target(tiny_models):
    _, cfg, params = tiny_models["llama3"]  # tied embeddings: E[target] is also the unembedding row
    acts = np.asarray(site_activations(params, cfg, [PROMPT])[0])  # [L, F]
    top = np.argsort(acts, axis=None)[-4:]  # the most positive activations: the edit pushes along +E
    neurons = [tuple(int(x) for x in np.unravel_index(k, acts.shape)) for k in top]
    target, source = 17, 40
    before = snapshot(params)
    edited = edits.edit_toward_token(params, neurons, target, source_id=source, alpha=2.0)
    assert_same_tree(params, before)
    p0 = iv.answer_probability(params, cfg, PROMPT, [target]).first
    p1 = iv.answer_probability(edited, cfg, PROMPT, [target]).first
    assert float(p1) > float(p0)  # small random weights give small activations: a small move
    q0 = iv.answer_probability(params, cfg, PROMPT, [source]).first
    q1 = iv.answer_probability(edited, cfg, PROMPT, [source]).first
    assert float(q1) < float(q0)
    delta = np.asarray(edited["layers"]["w_down"]) - before["layers"]["w_down"]
    expected = 2.0 * (before["embed"][target] - before["embed"][source])
    for layer, index in neurons:
        np.testing.assert_allclose(delta[layer, index], expected, atol=1e-6)


def test_smollm2_edit_redirects_a_fact(smollm2):
    cfg, params, tok = smollm2
    prompt = tok.encode("Q: What is the capital of Italy?\nA: Rome\nQ: What is the capital of France?\nA:")
    paris, berlin = tok.encode(" Paris")[0], tok.encode(" Berlin")[0]
    acts = np.asarray(site_activations(params, cfg, [prompt])[0])
    top = np.argsort(acts[-8:], axis=None)[-10:]  # positive neurons of the top layers
    neurons = [(int(k // cfg.d_ff) + cfg.n_layers - 8, int(k % cfg.d_ff)) for k in top]
    edited = edits.edit_toward_token(params, neurons, berlin, source_id=paris)
    before = iv.answer_probability(params, cfg, prompt, [berlin]).first
    after = iv.answer_probability(edited, cfg, prompt, [berlin]).first
    assert float(before) < 1e-3 and float(after) > 0.5  # measured: 7e-6 -> 1.0
    assert float(iv.answer_probability(edited, cfg, prompt, [paris]).first) < 1e-3  # measured: 0.20 -> 7e-33


def test_bad_edits_are_named(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    with pytest.raises(ValueError, match="only the 'product' site"):
        edits.erase_neurons(params, NEURONS, site="gate")
    with pytest.raises(ValueError, match="only the 'product' site"):
        edits.edit_toward_token(params, NEURONS, 3, site="act")
    with pytest.raises(ValueError, match="unk_token_id"):
        edits.erase_neurons(params, NEURONS, mode="unk")
    with pytest.raises(ValueError, match="erase mode"):
        edits.erase_neurons(params, NEURONS, mode="noise")
    with pytest.raises(ValueError, match="target token id 64 is out of range"):
        edits.edit_toward_token(params, NEURONS, 64)
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        edits.erase_neurons(params, [(3, 0)])
    with pytest.raises(ValueError, match="neuron index 48 is out of range"):
        edits.erase_neurons(params, [(0, 48)])
    with pytest.raises(ValueError, match="empty neuron set"):
        edits.erase_neurons(params, [])
