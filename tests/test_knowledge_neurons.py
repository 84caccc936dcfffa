"""The EleutherAI-style `KnowledgeNeurons` class: the same results as jaxkn's pure functions, params never
mutated, EleutherAI's argument semantics and result layout."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxkn import interventions as iv
from jaxkn import weight_edits as edits
from jaxkn.attribution import AttributionConfig, answer_token_ids, attribute_ids
from jaxkn.knowledge_neurons import KnowledgeNeurons
from jaxkn.neurons import coarse_neurons, drop_negative, mask_neurons, refined_neurons, to_eleuther

PROMPTS = ["ab cd", "abc d", "xy abcd"]
KEYS = {"gt_prob", "argmax_completion", "argmax_prob"}


class CharTokenizer:
    """One token per character (ids 3..63), no BOS: enough to drive the text API on a tiny model."""

    bos_id = None

    def encode(self, text, add_bos=None):
        return [3 + (ord(c) % 61) for c in text]

    def decode(self, ids):
        return "".join(chr(ord("!") + int(i)) for i in ids)


@pytest.fixture(scope="module")
def kn(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    return KnowledgeNeurons(cfg, params, CharTokenizer(), attribution_config=AttributionConfig(steps=4))


def _leaves(params):
    return [np.array(x) for x in jax.tree_util.tree_leaves(params)]


def test_scores_and_coarse_rules(kn):
    scores = kn.get_scores(PROMPTS[0], "e")
    assert scores.shape == (kn.n_layers(), kn.intermediate_size())
    tok = CharTokenizer()
    direct = attribute_ids(kn.params, kn.cfg, [tok.encode("ab cd")], [tok.encode(" e")], kn.attribution_config)
    np.testing.assert_allclose(scores, direct.scores[0], rtol=1e-6)
    adaptive = kn.get_coarse_neurons(PROMPTS[0], "e", adaptive_threshold=0.2)
    assert adaptive == to_eleuther(coarse_neurons(scores, 0.2)) and adaptive
    absolute = kn.get_coarse_neurons(PROMPTS[0], "e", threshold=0.3 * scores.max())
    assert absolute == to_eleuther(mask_neurons(scores > 0.3 * scores.max()))
    percentile = kn.get_coarse_neurons(PROMPTS[0], "e", percentile=99)
    assert percentile == to_eleuther(mask_neurons(scores > np.percentile(scores, 99)))
    assert len(percentile) == int(np.ceil(0.01 * scores.size))  # distinct random scores: the top 1%
    with pytest.raises(ValueError, match="exactly one of"):
        kn.get_coarse_neurons(PROMPTS[0], "e")
    with pytest.raises(ValueError, match="exactly one of"):
        kn.get_coarse_neurons(PROMPTS[0], "e", threshold=0.1, percentile=90)


def test_refined_neurons_default_to_eleuthers_strict_rule(kn):
    coarse = [coarse_neurons(s, 0.3) for s in np.asarray(kn.attribute(PROMPTS, "e").scores)]
    refined = kn.get_refined_neurons(PROMPTS, "e")  # adaptive 0.3, strict p = 0.5: 2 of 3 prompts
    assert refined == to_eleuther(refined_neurons(coarse, 0.5, "strict")) and refined
    assert kn.get_refined_neurons(PROMPTS, "e", batch_size=1) == refined  # batching does not change sets
    study = kn.get_refined_neurons(PROMPTS, "e", coarse_adaptive_threshold=0.2, refine_rule="fraction")
    coarse_02 = [coarse_neurons(s, 0.2) for s in np.asarray(kn.attribute(PROMPTS, "e").scores)]
    assert study == to_eleuther(refined_neurons(coarse_02, 0.5, "fraction"))
    with pytest.raises(ValueError, match="coarse_adaptive_threshold=None"):
        kn.get_refined_neurons(PROMPTS, "e", coarse_percentile=90)
    with pytest.raises(ValueError, match="non-empty list"):
        kn.get_refined_neurons([], "e")


def test_negative_examples_remove_neurons_coarse_on_the_negative_prompt(kn):
    refined = [tuple(n) for n in kn.get_refined_neurons(PROMPTS, "e")]
    negative_prompt = "ab cd"  # coarse on a positive prompt: some refined neurons are coarse there
    negative = [tuple(n) for n in kn.get_coarse_neurons(negative_prompt, "e", adaptive_threshold=0.3)]
    assert set(refined) & set(negative)
    kept = kn.get_refined_neurons(PROMPTS, "e", negative_examples=[negative_prompt])
    assert kept == to_eleuther(drop_negative(refined, [negative]))
    assert not set(map(tuple, kept)) & set(negative)


def _ids(prompt, target):
    return answer_token_ids(CharTokenizer(), prompt, target)


@pytest.mark.parametrize("mode", ["suppress", "enhance"])
def test_activation_patches_match_interventions(kn, mode):
    neurons = kn.get_refined_neurons(PROMPTS, "e")
    before_params = _leaves(kn.params)
    method = kn.suppress_knowledge if mode == "suppress" else kn.enhance_knowledge
    results, undo = method(PROMPTS[0], "ef", neurons)
    assert set(results) == {"before", "after"} and set(results["before"]) == set(results["after"]) == KEYS
    prompt, target = _ids(PROMPTS[0], "ef")
    patch = (iv.suppress if mode == "suppress" else iv.enhance)(neurons, kn.cfg)
    effect = iv.intervention_effect(kn.params, kn.cfg, prompt, target, patch)
    assert results["before"]["gt_prob"] == float(effect.before.joint)
    assert results["after"]["gt_prob"] == float(effect.after.joint)
    greedy = np.asarray(iv.generate_under(kn.params, kn.cfg, [prompt], len(target), patch).tokens)[0]
    assert results["after"]["argmax_completion"] == CharTokenizer().decode(greedy)
    per_token = np.asarray(iv.answer_probability(kn.params, kn.cfg, prompt, [int(t) for t in greedy], patch)
                           .per_token)
    assert np.isclose(results["after"]["argmax_prob"], np.prod(per_token))
    assert undo() == () and kn.standing_intervention is None
    for a, b in zip(before_params, _leaves(kn.params)):
        np.testing.assert_array_equal(a, b)


def test_kept_activation_patch_stands_until_undone(kn):
    neurons = kn.get_refined_neurons(PROMPTS, "e")
    results, undo = kn.suppress_knowledge(PROMPTS[0], "e", neurons, undo_modification=False)
    assert kn.standing_intervention is not None
    again = kn.measure(PROMPTS[0], "e")
    assert again["gt_prob"] == results["after"]["gt_prob"]
    with pytest.raises(ValueError, match="standing"):
        kn.get_scores(PROMPTS[0], "e")
    undo()
    assert kn.standing_intervention is None and kn.measure(PROMPTS[0], "e") == results["before"]


def test_erase_and_edit_are_pure_and_match_jaxkn_edits(kn):
    neurons = kn.get_refined_neurons(PROMPTS, "e")
    original, before_params = kn.params, _leaves(kn.params)
    prompt, target = _ids(PROMPTS[1], "e")
    results, undo = kn.erase_knowledge(PROMPTS[1], "e", neurons)
    erased = edits.erase_neurons(original, neurons)
    assert results["after"]["gt_prob"] == float(iv.answer_probability(erased, kn.cfg, prompt, target).joint)
    assert results["before"]["gt_prob"] == float(iv.answer_probability(original, kn.cfg, prompt, target).joint)
    assert kn.params is original and undo() == ()
    results, undo = kn.erase_knowledge(PROMPTS[1], "e", neurons, undo_modification=False)
    assert kn.params is not original and kn.measure(PROMPTS[1], "e") == results["after"]
    undo()
    assert kn.params is original
    edited_results, _ = kn.edit_knowledge(PROMPTS[1], "x", neurons)
    x_prompt, x_target = _ids(PROMPTS[1], "x")
    source = int(np.asarray(iv.generate_under(original, kn.cfg, [x_prompt], 1).tokens)[0, 0])
    edited = edits.edit_toward_token(original, neurons, x_target[0], source_id=source)
    assert edited_results["after"]["gt_prob"] == float(iv.answer_probability(edited, kn.cfg, x_prompt,
                                                                             x_target).joint)
    for a, b in zip(before_params, _leaves(kn.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown erase mode"):
        kn.erase_knowledge(PROMPTS[1], "e", neurons, erase_value="mean")


def test_old_import_path_still_resolves():
    from jaxkn.neurons import KnowledgeNeurons as Old

    assert Old is KnowledgeNeurons
