"""Knowledge-neuron selection (METHOD.md §4): coarse rules, refine rules, leave-one-out folds, Dai's adaptive
rule, shared and fact-specific neurons, negative examples."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from jaxkn.neurons import (
    REFINE_RULES,
    SharedNeuron,
    adaptive_refine,
    adaptive_refine_masks,
    coarse_neurons,
    drop_negative,
    fact_specific,
    leave_one_out_masks,
    mask_neurons,
    percentile_mask,
    refine_count,
    refine_mask,
    refined_neurons,
    shared_neurons,
    threshold_mask,
    to_eleuther,
)

COMMITTED_RUNS = [os.path.join(os.path.dirname(__file__), os.pardir, "experiments", name, "facts")
                  for name in ("default_run", "converged_run_24")]


def test_coarse_threshold_is_relative_to_the_max():
    scores = np.zeros((3, 5))
    scores[0, 1], scores[2, 4], scores[1, 0], scores[1, 2] = 10.0, 2.5, 2.0, -50.0
    assert coarse_neurons(scores, 0.2) == [(0, 1), (2, 4)]  # 2.0 is not > 0.2 * 10
    assert coarse_neurons(scores, 0.2, layers=(4, 7, 9)) == [(4, 1), (9, 4)]
    assert coarse_neurons(-np.abs(scores), 0.2) == []  # nothing raises P: no coarse neuron
    with pytest.raises(ValueError, match="one prompt's scores"):
        coarse_neurons(np.zeros((2, 3, 4)))


def test_absolute_and_percentile_coarse_rules_follow_eleuther(rng):
    scores = rng.randn(2, 3, 7)
    np.testing.assert_array_equal(threshold_mask(scores, 0.5), scores > 0.5)
    got = percentile_mask(scores, 90)
    for b in range(2):
        np.testing.assert_array_equal(got[b], scores[b] > np.percentile(scores[b].ravel(), 90))
    assert got[0].sum() == 2  # 21 scores: 2 lie above the 90th percentile
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile_mask(scores, 120)


def test_refined_rules_list_form():
    sets = [[(0, 1), (2, 3)], [(0, 1)], [(0, 1), (2, 3), (1, 1)], [(1, 1)]]
    assert refined_neurons(sets, p=0.5) == [(0, 1), (1, 1), (2, 3)]  # fraction: 2 of 4
    assert refined_neurons(sets, p=0.5, rule="strict") == [(0, 1)]  # strict: more than 2 of 4, i.e. 3
    assert refined_neurons(sets, p=0.75) == [(0, 1)]
    assert refined_neurons(sets, rule="dai") == [(0, 1)]  # needs max(0.7 * 4, 3) = 3
    assert refined_neurons([[]], p=0.5) == []  # empty is data, not an error
    with pytest.raises(ValueError, match="at least 2 queries"):
        refined_neurons([])
    with pytest.raises(ValueError, match="unknown refinement rule"):
        refined_neurons(sets, rule="majority")
    assert to_eleuther([(0, 1), (2, 3)]) == [[0, 1], [2, 3]]


def test_strict_needs_three_of_four_and_fraction_two():
    coarse = np.zeros((4, 2, 3), bool)
    coarse[:2, 0, 0] = True  # in 2 of 4 prompts
    coarse[:3, 1, 2] = True  # in 3 of 4
    assert mask_neurons(refine_mask(coarse, "fraction", 0.5)) == [(0, 0), (1, 2)]
    assert mask_neurons(refine_mask(coarse, "strict", 0.5)) == [(1, 2)]
    assert mask_neurons(refine_mask(coarse, "dai")) == [(1, 2)]


@pytest.mark.parametrize("rule", ["fraction", "strict", "dai"])
def test_mask_form_equals_list_form(rng, rule):
    for p in (0.3, 0.5, 0.7):
        coarse = rng.rand(5, 3, 8) < 0.4
        sets = [mask_neurons(c) for c in coarse]
        assert mask_neurons(refine_mask(coarse, rule, p)) == refined_neurons(sets, p, rule)


def test_count_tolerance_matches_the_studys_copy_and_exact_products():
    counts = np.arange(0, 11)
    for n in range(1, 11):
        for p in np.round(np.arange(0, 1.0001, 0.05), 10):
            ours = counts >= refine_count(n, p, "fraction")
            np.testing.assert_array_equal(ours, counts >= p * n - 1e-9)  # the study's old comparison
    for n in range(1, 11):  # p * n exact: the plain comparison agrees bit for bit
        np.testing.assert_array_equal(counts >= refine_count(n, 0.5), counts >= 0.5 * n)
    # a decimal p means what it says: 0.28 * 25 is 7.000000000000001, 0.57 * 100 is 56.99999999999999
    assert 0.28 * 25 > 7 and refine_count(25, 0.28) == 7.0 and refine_count(100, 0.57, "strict") == 57.0
    assert refined_neurons([[(0, 0)]] * 7 + [[]] * 18, 0.28) == [(0, 0)]  # 7 of 25 prompts
    assert refined_neurons([[(0, 0)]] * 57 + [[]] * 43, 0.57, "strict") == []  # 57 is not more than 57
    assert refine_count(10, rule="dai") == 7.0 and refine_count(3, rule="dai") == 3.0


def test_leave_one_out_folds_refine_the_other_prompts(rng):
    coarse = rng.rand(5, 3, 6) < 0.5
    for rule in ("fraction", "strict", "dai"):
        folds = leave_one_out_masks(coarse, rule, 0.5)
        assert folds.shape == coarse.shape
        for j in range(5):
            np.testing.assert_array_equal(folds[j], refine_mask(np.delete(coarse, j, axis=0), rule, 0.5))
    with pytest.raises(ValueError, match="at least 2 queries"):
        leave_one_out_masks(coarse[:1])
    with pytest.raises(ValueError, match="at least 2 queries"):
        refine_mask(coarse[:0])
    with pytest.raises(ValueError, match="adaptive_refine_masks"):
        refine_mask(coarse, "dai_adaptive")
    assert "dai_adaptive" in REFINE_RULES


def test_adaptive_refine_moves_p_until_two_to_five():
    many = [[(0, i) for i in range(8)] for _ in range(3)] + [[(1, 0)]]  # 8 neurons in 3 of 4 prompts
    p, refined = adaptive_refine([many, many], p=0.5)  # 8 neurons until p > 0.75, then none: stops at 6 moves
    assert np.isclose(p, 0.8) and refined == [[], []]
    staggered = [[(0, i) for i in range(k)] for k in range(1, 11)]  # neuron i coarse in 10 - i prompts
    p, refined = adaptive_refine([staggered], p=0.5)
    assert 2 <= len(refined[0]) <= 5 and p > 0.5
    p_low, refined_low = adaptive_refine([[[(0, 1)], [(0, 2)], [(0, 3)]]], p=0.5, max_moves=6)
    assert p_low < 0.5 and round((0.5 - p_low) / 0.05) <= 6


def _masks(sets, shape=(2, 12)):
    out = np.zeros((len(sets), *shape), bool)
    for j, s in enumerate(sets):
        for layer, index in s:
            out[j, layer, index] = True
    return out


def test_adaptive_is_per_relation_and_mask_form_equals_list_form():
    staggered = [[(0, i) for i in range(k)] for k in range(1, 11)]  # many neurons at p = 0.5
    sparse = [[(1, 0)], [(1, 0)], [(1, 1)], [(1, 2)]]  # one neuron at p = 0.5
    relations = {"r1": {"a": staggered, "b": staggered}, "r2": {"c": sparse, "d": sparse}}
    chosen = {}
    for relation, facts in relations.items():
        p_list, refined_list = adaptive_refine(list(facts.values()))
        p_mask, refined_mask = adaptive_refine_masks({k: _masks(v) for k, v in facts.items()})
        assert p_mask == p_list
        assert [mask_neurons(refined_mask[k]) for k in facts] == refined_list
        chosen[relation] = p_mask
    assert chosen["r1"] > 0.5 > chosen["r2"]  # each relation moves its own p
    with pytest.raises(ValueError, match="at least one fact"):
        adaptive_refine_masks({})


def test_shared_format_neuron_is_removed_and_answers_count_once():
    fmt, paris = (0, 156), (5, 7)
    refined = {f"fact{k}": [fmt, (3, k)] for k in range(8)}  # a format neuron in 8 facts with 8 answers
    refined["fact0"] = [fmt]  # a fact whose set is the format neuron only
    answers = {f"fact{k}": f"answer {k}" for k in range(8)}
    for k in range(3):  # three facts share one answer: an answer neuron, not a format neuron
        refined[f"paris{k}"] = [paris, (4, k)]
        answers[f"paris{k}"] = " Paris" if k else "paris"
    shared = shared_neurons(refined, answers, share=0.1, min_facts=3)
    assert shared == [SharedNeuron(fmt, 8)]  # N = 11: needs max(3, 1.1) distinct answers; Paris has 1
    by_fact = shared_neurons(refined, answers, distinct_answers=False)
    assert by_fact == [SharedNeuron(fmt, 8), SharedNeuron(paris, 3)]
    assert fact_specific(refined["fact1"], shared) == [(3, 1)]
    assert fact_specific(refined["fact0"], shared) == []  # empty: data, not an error
    assert fact_specific(refined["paris1"], [fmt]) == [(4, 1), paris]
    assert shared_neurons(refined, answers, share=0.9) == []  # needs 9.9 of 11
    as_arrays = {k: np.asarray(v).reshape(-1, 2) for k, v in refined.items()}  # the study's [k, 2] arrays
    assert shared_neurons(as_arrays, answers) == shared
    assert fact_specific(as_arrays["fact1"], shared) == [(3, 1)]
    with pytest.raises(ValueError, match="no answer for facts"):
        shared_neurons(refined, {})


@pytest.mark.parametrize("run", COMMITTED_RUNS, ids=["default_run", "converged_run_24"])
def test_committed_run_shared_neurons_are_recomputed_from_its_facts(run):
    """The committed default run's shared neurons and empty fact-specific sets, recomputed from its facts'
    refined sets by the library, are what its summary.json records (METHOD §4: distinct answers counted)."""
    files = sorted(glob.glob(os.path.join(run, "*.json")))
    assert files, f"committed run {run} has no facts"
    facts = [json.load(open(f)) for f in files]
    refined = {j: [tuple(n) for n in f["refined"]] for j, f in enumerate(facts)}
    answers = {j: f["answer"] for j, f in enumerate(facts)}
    summary = json.load(open(os.path.join(os.path.dirname(run), "summary.json")))
    shared = shared_neurons(refined, answers)
    assert [{"neuron": list(n.neuron), "facts": n.facts} for n in shared] == summary["neurons"]["shared"]
    specific = [fact_specific(r, shared) for r in refined.values()]
    assert sum(not s for s in specific) == summary["facts"]["empty_kn"]
    by_fact = shared_neurons(refined, answers, distinct_answers=False)  # METHOD's wording counts facts
    assert len(by_fact) >= len(shared) and by_fact[0].facts >= shared[0].facts


def test_drop_negative_removes_neurons_coarse_on_other_facts():
    refined = [(0, 1), (2, 3), (4, 5)]
    assert drop_negative(refined, [[(2, 3)], [(9, 9)], []]) == [(0, 1), (4, 5)]
    assert drop_negative(refined, []) == refined
