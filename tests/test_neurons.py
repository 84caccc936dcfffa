"""Knowledge-neuron selection (METHOD.md §4) and the EleutherAI-style API."""

from __future__ import annotations

import numpy as np
import pytest

from jaxkn.attribution import AttributionConfig, attribute_ids
from jaxkn.neurons import (
    KnowledgeNeurons,
    adaptive_refine,
    batch_coarse_neurons,
    coarse_neurons,
    refined_neurons,
    to_eleuther,
)


def test_coarse_threshold_is_relative_to_the_max():
    scores = np.zeros((3, 5))
    scores[0, 1], scores[2, 4], scores[1, 0], scores[1, 2] = 10.0, 2.5, 2.0, -50.0
    assert coarse_neurons(scores, 0.2) == [(0, 1), (2, 4)]  # 2.0 is not > 0.2 * 10
    assert coarse_neurons(scores, 0.2, layers=(4, 7, 9)) == [(4, 1), (9, 4)]
    assert coarse_neurons(-np.abs(scores), 0.2) == []  # nothing raises P: no coarse neuron
    with pytest.raises(ValueError, match="one prompt's scores"):
        coarse_neurons(np.zeros((2, 3, 4)))


def test_refined_rules():
    sets = [[(0, 1), (2, 3)], [(0, 1)], [(0, 1), (2, 3), (1, 1)], [(1, 1)]]
    assert refined_neurons(sets, p=0.5) == [(0, 1), (1, 1), (2, 3)]
    assert refined_neurons(sets, p=0.75) == [(0, 1)]
    assert refined_neurons(sets, rule="dai") == [(0, 1)]  # needs max(0.7 * 4, 3) = 3
    assert refined_neurons([[]], p=0.5) == []  # empty is data, not an error
    with pytest.raises(ValueError, match="at least one prompt"):
        refined_neurons([])
    assert to_eleuther([(0, 1), (2, 3)]) == [[0, 1], [2, 3]]


def test_adaptive_refine_moves_p_until_two_to_five():
    many = [[(0, i) for i in range(8)] for _ in range(3)] + [[(1, 0)]]  # 8 neurons in 3 of 4 prompts
    p, refined = adaptive_refine([many, many], p=0.5)  # 8 neurons until p > 0.75, then none: stops at 6 moves
    assert np.isclose(p, 0.8) and refined == [[], []]
    staggered = [[(0, i) for i in range(k)] for k in range(1, 11)]  # neuron i coarse in 10 - i prompts
    p, refined = adaptive_refine([staggered], p=0.5)
    assert 2 <= len(refined[0]) <= 5 and p > 0.5
    p_low, refined_low = adaptive_refine([[[(0, 1)], [(0, 2)], [(0, 3)]]], p=0.5, max_moves=6)
    assert p_low < 0.5 and round((0.5 - p_low) / 0.05) <= 6


class CharTokenizer:
    """One token per character (ids 3..63), no BOS: enough to drive the text API on a tiny model."""

    bos_id = None

    def encode(self, text, add_bos=None):
        return [3 + (ord(c) % 61) for c in text]


def test_knowledge_neurons_api(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    config = AttributionConfig(steps=4)
    kn = KnowledgeNeurons(cfg, params, CharTokenizer(), attribution_config=config)
    prompts = ["ab cd", "abc d", "xy abcd"]
    scores = kn.get_scores(prompts[0], "e")
    assert scores.shape == (cfg.n_layers, cfg.d_ff)
    direct = attribute_ids(params, cfg, [CharTokenizer().encode("ab cd")], [CharTokenizer().encode(" e")], config)
    np.testing.assert_allclose(scores, direct.scores[0], rtol=1e-6)
    coarse = kn.get_coarse_neurons(prompts[0], "e", threshold=0.2)
    assert coarse == to_eleuther(coarse_neurons(scores, 0.2)) and coarse
    refined = kn.get_refined_neurons(prompts, "e", p=0.5)
    batch = batch_coarse_neurons(kn.attribute(prompts, "e"), 0.2)
    assert refined == to_eleuther(refined_neurons(batch, 0.5))
    with pytest.raises(ValueError, match="non-empty list"):
        kn.get_refined_neurons([], "e")
