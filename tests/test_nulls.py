"""The nulls of METHOD §5: wrong-fact selection, matched random draws (same layer, same |abar| decile) and the
"both hops" union control."""

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxkn import nulls, recall
from jaxkn.interventions import random_neurons

FACTS = {("Q1", "P36", "Q90"): ("Paris", "capital"), ("Q2", "P36", "Q64"): ("Berlin", "capital"),
         ("Q3", "P36", "Q90"): ("paris", "capital"),  # the same answer, written otherwise: never a null
         ("Q4", "P36", "Q220"): ("Rome", "capital"), ("Q5", "P50", "Q1067"): ("Dante Alighieri", "author"),
         ("Q6", "P50", "Q692"): ("William Shakespeare", "author"), ("Q7", "P36", "Q1490"): ("Tokyo", "capital"),
         ("Q8", "P50", "Q5879"): ("Goethe", "author")}
OWN = ("Q1", "P36", "Q90")


def test_wrong_fact_keys_same_relation_first_and_answer_differs():
    keys = nulls.wrong_fact_keys(OWN, FACTS, n_min=3)
    assert keys == [("Q2", "P36", "Q64"), ("Q4", "P36", "Q220"), ("Q7", "P36", "Q1490"),
                    ("Q5", "P50", "Q1067"), ("Q6", "P50", "Q692"), ("Q8", "P50", "Q5879")]
    assert all(FACTS[k][0].lower() != "paris" for k in keys)
    # reordering the mapping does not change the answer
    assert nulls.wrong_fact_keys(OWN, dict(reversed(list(FACTS.items()))), n_min=3) == keys


def test_wrong_fact_sample_is_seeded_and_fills_from_the_same_relation_first():
    a = nulls.wrong_fact_keys(OWN, FACTS, n=4, n_min=3, seed=(1, 2))
    assert a == nulls.wrong_fact_keys(OWN, FACTS, n=4, n_min=3, seed=(1, 2))
    assert [FACTS[k][1] for k in a] == ["capital"] * 3 + ["author"]  # all three capitals, then one author
    two = {tuple(nulls.wrong_fact_keys(OWN, FACTS, n=3, n_min=3, seed=s)) for s in range(20)}
    assert all(all(FACTS[k][1] == "capital" for k in keys) for keys in two)
    authors = {nulls.wrong_fact_keys(OWN, FACTS, n=4, n_min=3, seed=s)[-1] for s in range(30)}
    assert len(authors) > 1  # the sample really depends on the seed


def test_wrong_fact_keys_are_the_same_in_another_process():
    code = ("from jaxkn import nulls; from tests.test_nulls import FACTS, OWN; "
            "print(nulls.wrong_fact_keys(OWN, FACTS, n=4, n_min=3, seed=5))")
    env = {"PYTHONHASHSEED": "123", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.strip()
    assert out == str(nulls.wrong_fact_keys(OWN, FACTS, n=4, n_min=3, seed=5))


def test_wrong_fact_guards():
    with pytest.raises(ValueError, match="only 6 other facts"):
        nulls.wrong_fact_keys(OWN, FACTS)  # n_min = 20 by default
    with pytest.raises(ValueError, match="at least n_min"):
        nulls.wrong_fact_keys(OWN, FACTS, n=2, n_min=3)
    with pytest.raises(ValueError, match="not among"):
        nulls.wrong_fact_keys(("nope",), FACTS)


L, F = 3, 50


@pytest.fixture(scope="module")
def abar():
    return np.random.default_rng(0).normal(size=(L, F)).astype(np.float32)


KN = [(0, 4), (0, 17), (1, 3), (2, 30), (2, 31)]


def test_matched_random_same_layer_same_decile_excludes_own(abar):
    draws = nulls.matched_random_sets(KN, np.abs(abar), n_draws=200, seed=3)
    assert draws.shape == (200, len(KN), 2)
    own = np.asarray(sorted(KN))
    deciles = nulls.layer_deciles(np.abs(abar))
    np.testing.assert_array_equal(draws[..., 0], np.broadcast_to(own[:, 0], (200, len(KN))))  # same layer
    np.testing.assert_array_equal(deciles[draws[..., 0], draws[..., 1]],
                                  np.broadcast_to(deciles[own[:, 0], own[:, 1]], (200, len(KN))))
    own_set = {tuple(p) for p in own}
    assert not any(tuple(p) in own_set for p in draws.reshape(-1, 2))  # never the KN set itself
    assert all(len(np.unique(d, axis=0)) == len(KN) for d in draws)  # distinct within a draw
    assert len({tuple(map(tuple, d)) for d in draws}) > 150  # draws differ
    np.testing.assert_array_equal(draws, nulls.matched_random_sets(KN, abar, 200, seed=3))  # seeded, |.| taken
    assert not np.array_equal(draws, nulls.matched_random_sets(KN, abar, 200, seed=4))


def test_deciles_are_by_rank_within_a_layer():
    ties = np.zeros((2, 20))
    ties[1] = np.arange(20)[::-1]
    deciles = nulls.layer_deciles(ties)
    np.testing.assert_array_equal(np.bincount(deciles[0]), [2] * 10)  # ties spread evenly by index
    np.testing.assert_array_equal(deciles[1], np.arange(20)[::-1] // 2)


def test_matched_random_knsets_read_with_the_facts_abar(abar):
    sets = nulls.matched_random_knsets(KN, abar, n_draws=5, seed=0)
    draws = nulls.matched_random_sets(KN, np.abs(abar), 5, seed=0)
    for kn, d in zip(sets, draws):
        np.testing.assert_array_equal(kn.neurons, np.unique(d, axis=0))
        np.testing.assert_allclose(kn.abar, abar[kn.neurons[:, 0], kn.neurons[:, 1]])
    assert np.asarray(recall.read_many(abar, sets)).shape == (5,)
    np.testing.assert_allclose(np.asarray(recall.read_many(abar, sets)), 1.0, rtol=1e-5)  # R = 1 on abar itself


def test_matched_random_guards(abar):
    narrow = np.abs(abar[:, :10])  # one neuron per decile: nothing left to draw
    with pytest.raises(ValueError, match="decile"):
        nulls.matched_random_sets([(0, 1)], narrow, 10)
    with pytest.raises(ValueError, match="n_draws"):
        nulls.matched_random_sets(KN, abar, 0)


def test_both_hops_control_has_the_unions_count_per_layer():
    hop1, hop2 = [(0, 1), (1, 5), (2, 7)], [(1, 5), (2, 8), (2, 9)]
    both = nulls.union([hop1, recall.KNSet(np.array(hop2), np.ones(3))])
    np.testing.assert_array_equal(both, [[0, 1], [1, 5], [2, 7], [2, 8], [2, 9]])  # (1, 5) once
    control = random_neurons(both, (L, F), seed=0)
    np.testing.assert_array_equal(np.bincount(control[:, 0], minlength=L), [1, 1, 3])
    assert nulls.union([hop1, []]).shape == (3, 2)
    with pytest.raises(ValueError, match="empty"):
        nulls.union([[], []])
