"""KN Score (METHOD §5): score definitions, the leave-one-out single-hop level, two-hop summaries, tau, the
random control, and reading activations (batched prompts; KV-cache generation equals re-running the text)."""

import re

import numpy as np
import pytest

from jaxkn import recall
from jaxkn.model import forward

L, F = 3, 48
OMEGA = [(0, 3), (1, 7), (2, 11), (2, 40)]


@pytest.fixture(scope="module")
def query_acts():
    acts = np.random.RandomState(0).normal(size=(5, L, F)).astype(np.float32)
    acts[:, 0, 3] += 4.0  # one strongly positive and one strongly negative knowledge neuron
    acts[:, 2, 40] -= 6.0
    return acts


def test_scores_by_definition(query_acts):
    acts, abar = query_acts[0], recall.mean_activation(query_acts)
    values = np.array([acts[l, i] for l, i in OMEGA])
    ref = np.array([abar[l, i] for l, i in OMEGA])
    np.testing.assert_allclose(float(recall.kn_score(acts, OMEGA)), values.mean(), rtol=1e-6)
    expected = (np.sign(ref) * values).sum() / np.abs(ref).sum()
    np.testing.assert_allclose(float(recall.relative_score(acts, OMEGA, abar)), expected, rtol=1e-5)
    # R is 1 on the queries' own average; with positive abar it is the paper's score over its level.
    np.testing.assert_allclose(float(recall.relative_score(abar, OMEGA, abar)), 1.0, rtol=1e-6)
    pos = np.abs(query_acts) + 0.1
    np.testing.assert_allclose(float(recall.relative_score(pos[0], OMEGA, pos.mean(0))),
                               float(recall.kn_score(pos[0], OMEGA) / recall.kn_score(pos.mean(0), OMEGA)),
                               rtol=1e-5)
    batched = recall.kn_score(query_acts, OMEGA)  # leading axes broadcast
    assert batched.shape == (5,)
    np.testing.assert_allclose(float(batched[2]), float(recall.kn_score(query_acts[2], OMEGA)), rtol=1e-6)


def test_single_hop_level_is_leave_one_out(query_acts):
    sets = [OMEGA, OMEGA[:2], [], OMEGA[1:], [(1, 1)]]
    got = recall.single_hop_level(query_acts, sets)
    assert got.n_skipped == 1 and np.isnan(got.per_query[2])
    for j in (0, 1, 3, 4):
        rest = np.delete(query_acts, j, axis=0).mean(0)  # abar from the other queries only
        expected = recall.relative_score(query_acts[j], sets[j], rest)
        np.testing.assert_allclose(got.per_query[j], float(expected), rtol=1e-5)
    np.testing.assert_allclose(got.level, np.nanmean(got.per_query), rtol=1e-12)
    paper = recall.single_hop_level(query_acts, sets, kind="paper")
    np.testing.assert_allclose(paper.per_query[0], float(recall.kn_score(query_acts[0], OMEGA)), rtol=1e-6)
    assert np.isnan(recall.single_hop_level(query_acts, [[]] * 5).level)


def test_two_hop_level_summaries(query_acts):
    abar = recall.mean_activation(query_acts)
    at_last = recall.two_hop_level(query_acts[0], OMEGA, abar)
    assert at_last.per_position is None
    np.testing.assert_allclose(at_last.level, float(recall.relative_score(query_acts[0], OMEGA, abar)), rtol=1e-6)
    valid = np.array([True, True, True, False, False])
    per = np.array([float(recall.relative_score(a, OMEGA, abar)) for a in query_acts])
    high = recall.two_hop_level(query_acts, OMEGA, abar, valid=valid)
    mean = recall.two_hop_level(query_acts, OMEGA, abar, valid=valid, summary="mean")
    np.testing.assert_allclose(high.level, per[:3].max(), rtol=1e-5)
    np.testing.assert_allclose(mean.level, per[:3].mean(), rtol=1e-5)
    np.testing.assert_allclose(high.per_position, per, rtol=1e-5)


def test_recalled_and_tau_curve():
    assert recall.recalled(0.5, 1.0) and not recall.recalled(0.49, 1.0)
    assert recall.recalled(0.3, 1.0, tau=0.25)
    taus, shares = recall.tau_curve([0.2, 0.6, 0.9, np.nan], [1.0, 1.0, 1.0, 1.0])
    assert taus[0] == 0.25 and taus[-1] == 1.0 and len(taus) == 16
    np.testing.assert_allclose(shares[taus == 0.5], 0.5)  # 0.6 and 0.9 of 4
    np.testing.assert_allclose(shares[-1], 0.0)
    assert np.all(np.diff(shares) <= 0)


def test_hop_recall_with_random_control(query_acts):
    sets = [OMEGA] * 5
    out = recall.hop_recall(query_acts, sets, OMEGA, query_acts[1:4], seed=7, valid=[True, True, False])
    counts = np.bincount(np.asarray(out.control_neurons)[:, 0], minlength=L)
    np.testing.assert_array_equal(counts, np.bincount([l for l, _ in OMEGA], minlength=L))
    again = recall.hop_recall(query_acts, sets, OMEGA, query_acts[1:4], seed=7, valid=[True, True, False])
    assert again.control_two_hop.level == out.control_two_hop.level
    assert out.single.level == recall.single_hop_level(query_acts, sets).level
    assert out.recalled == bool(out.two_hop.level >= 0.5 * out.single.level)
    assert out.single.level > out.control_single.level  # the planted neurons are consistent, random ones not


def test_site_activations_batched_equal_alone(tiny_models):
    _, cfg, params = tiny_models["mistral"]
    prompts = [[5, 9, 13, 2, 7], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]]
    both = recall.site_activations(params, cfg, prompts)
    for b, p in enumerate(prompts):
        full = forward(params, np.asarray([p]), cfg, capture=("product",)).captures["product"]  # [L, 1, T, F]
        np.testing.assert_allclose(np.asarray(both[b]), np.asarray(full[:, 0, -1]), atol=1e-6)
    at = recall.site_activations(params, cfg, prompts, at=[1, -3], site="gate")
    full = forward(params, np.asarray([prompts[1]]), cfg, capture=("gate",)).captures["gate"]
    np.testing.assert_allclose(np.asarray(at[1]), np.asarray(full[:, 0, -3]), atol=1e-6)


def check_generation_scores(params, cfg, prompt, neurons, n_new, atol):
    out = recall.generated_activations(params, cfg, [prompt], n_new)
    text = prompt + [int(t) for t in np.asarray(out.generation.tokens[0])]
    full = forward(params, np.asarray([text]), cfg, capture=("product",)).captures["product"][:, 0]  # [L, T, F]
    reads = np.moveaxis(np.asarray(full), 1, 0)[len(prompt) - 1: len(text) - 1]  # [N, L, F]
    abar = reads.mean(0)
    for kind in ("paper", "relative"):
        cached = recall.two_hop_level(out.acts[0], neurons, abar, kind=kind, valid=out.valid[0])
        rerun = recall.two_hop_level(reads, neurons, abar, kind=kind)
        np.testing.assert_allclose(cached.per_position, rerun.per_position, rtol=0, atol=atol)
        np.testing.assert_allclose(cached.level, rerun.level, rtol=0, atol=atol)


def test_generation_scores_equal_rerunning_the_text(tiny_models):
    _, cfg, params = tiny_models["llama3"]
    check_generation_scores(params, cfg, [5, 9, 13, 2, 7], OMEGA, 6, atol=1e-5)


def test_smollm2_generation_scores_equal_rerunning_the_text(smollm2):
    cfg, params, tok = smollm2
    prompt = tok.encode("Q: What is the capital of Japan?\nA: Tokyo\nQ: What is the capital of Germany?\nA:")
    neurons = [(l, i) for l in (2, 10, 18, 27, 29) for i in (5, 700, 1500)]
    check_generation_scores(params, cfg, prompt, neurons, 4, atol=1e-5)


def test_bad_recall_inputs(query_acts):
    with pytest.raises(ValueError, match="empty neuron set"):
        recall.kn_score(query_acts[0], [])
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        recall.kn_score(query_acts[0], [(3, 0)])
    with pytest.raises(ValueError, match="neuron index 48 is out of range"):
        recall.relative_score(query_acts[0], [(0, 48)], query_acts.mean(0))
    with pytest.raises(ValueError, match="summary"):
        recall.two_hop_level(query_acts, OMEGA, query_acts.mean(0), summary="median")
    with pytest.raises(ValueError, match="5 queries"):
        recall.single_hop_level(query_acts, [OMEGA] * 4)
    with pytest.raises(ValueError, match="at least 2"):
        recall.single_hop_level(query_acts[:1], [OMEGA])
    with pytest.raises(ValueError, match="needs abar"):
        recall.score(query_acts[0], OMEGA)
    with pytest.raises(ValueError, match="invalid"):
        recall.two_hop_level(query_acts, OMEGA, query_acts.mean(0), valid=[False] * 5)


# ---- KN sets read many at once, and the specific score D ---------------------------------------------

def test_knset_reads_equal_the_scores(query_acts):
    abar = recall.mean_activation(query_acts)
    kn = recall.KNSet.from_queries(OMEGA, query_acts)
    np.testing.assert_allclose(kn.abar, [abar[l, i] for l, i in OMEGA], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(recall.read_R(query_acts, kn)),
                               np.asarray(recall.relative_score(query_acts, OMEGA, abar)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(recall.read_kn_score(query_acts, kn)),
                               np.asarray(recall.kn_score(query_acts, OMEGA)), rtol=1e-5)


def test_read_many_equals_reading_each_set(query_acts):
    abar = recall.mean_activation(query_acts)
    sets = [recall.KNSet.from_abar(s, abar) for s in (OMEGA, OMEGA[:1], [(1, 2), (1, 5), (2, 0)], [(0, 47)])]
    for kind, one in (("relative", recall.read_R), ("paper", recall.read_kn_score)):
        many = np.asarray(recall.read_many(query_acts, sets, kind=kind))  # sets of different widths, padded
        assert many.shape == (5, 4)
        loop = np.stack([np.asarray(one(query_acts, kn)) for kn in sets], axis=-1)
        np.testing.assert_allclose(many, loop, rtol=1e-6)


def planted_facts(n_facts=4):
    """A format neuron (0, 3) every fact's set holds (abar 10) and one neuron (2, 10 + g) per fact (abar 2)."""
    sets = [recall.KNSet(np.array([[0, 3], [2, 10 + g]]), np.array([10.0, 2.0])) for g in range(n_facts)]
    question = np.zeros((L, F), np.float32)  # a question about fact 0: the format neuron and fact 0's fire
    question[0, 3], question[2, 10] = 10.0, 2.0
    return sets, question


def test_specific_score_discriminates_where_R_does_not():
    sets, question = planted_facts()
    r = np.asarray(recall.read_many(question, sets))
    np.testing.assert_allclose(r, [1.0, 10 / 12, 10 / 12, 10 / 12], rtol=1e-6)
    assert np.all(r >= 0.5)  # by R, every unrelated fact is "recalled" on this question
    d = [float(recall.specific_score(question, sets[g], sets[:g] + sets[g + 1:])) for g in range(4)]
    np.testing.assert_allclose(d[0], 1.0 - 10 / 12, rtol=1e-5)
    np.testing.assert_allclose(d[1:], [10 / 12 - (1 + 2 * 10 / 12) / 3] * 3, rtol=1e-5)
    assert d[0] > 0 > max(d[1:])


def test_single_hop_specific_level_is_leave_one_out(query_acts):
    sets, _ = planted_facts()
    null = sets[1:]
    loo = [OMEGA, OMEGA[:2], [], OMEGA[1:], [(1, 1)]]
    got = recall.single_hop_specific_level(query_acts, loo, null)
    assert got.n_skipped == 1 and np.isnan(got.per_query[2])
    for j in (0, 1, 3, 4):
        rest = np.delete(query_acts, j, axis=0).mean(0)  # the own set's abar from the other queries only
        own = float(recall.relative_score(query_acts[j], loo[j], rest))
        null_r = np.mean([float(recall.relative_score(query_acts[j], kn.neurons, _dense(kn)))
                          for kn in null])  # the null sets as they are, not folded
        np.testing.assert_allclose(got.own[j], own, rtol=1e-5)
        np.testing.assert_allclose(got.per_query[j], own - null_r, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.level, np.nanmean(got.per_query), rtol=1e-12)


def _dense(kn):
    dense = np.zeros((L, F), np.float32)
    dense[kn.neurons[:, 0], kn.neurons[:, 1]] = kn.abar
    return dense


def test_two_hop_specific_level_and_recalled_specific(query_acts):
    sets, question = planted_facts()
    last = recall.two_hop_specific_level(question, sets[0], sets[1:])
    assert last.per_position is None and last.max == last.mean == pytest.approx(1 - 10 / 12, rel=1e-5)
    positions = np.stack([question * 0, question, question * 0.5])
    cot = recall.two_hop_specific_level(positions, sets[0], sets[1:], valid=[True, True, False])
    np.testing.assert_allclose(cot.per_position, np.array([0, 1, 0.5]) * (1 - 10 / 12), rtol=1e-5, atol=1e-7)
    assert cot.level("max") == pytest.approx(cot.per_position[1]) and cot.level("mean") == pytest.approx(
        cot.per_position[:2].mean())
    flags = recall.recalled_specific([0.3, 0.1, 0.5, 0.9], [0.4, 0.4, 0.0, -0.2])
    np.testing.assert_array_equal(flags[:2], [1.0, 0.0])
    assert np.isnan(flags[2:]).all()  # no specific signal on the single hop: undefined, not "not recalled"
    share = recall.specific_share([0.3, 0.1, 0.5, 0.9], [0.4, 0.4, 0.0, -0.2])
    assert share == (0.5, 1, 2, 2)
    taus, shares, defined, skipped = recall.specific_tau_curve([0.3, 0.1], [0.4, 0.4])
    assert (defined, skipped) == (2, 0) and shares[taus == 0.25] == 1.0 and shares[-1] == 0.0


def test_specific_guards(query_acts):
    sets, question = planted_facts()
    with pytest.raises(ValueError, match="at least 2 single-hop queries"):
        recall.single_hop_specific_level(query_acts[:1], [OMEGA], sets)
    with pytest.raises(ValueError, match="wrong-fact null"):
        recall.specific_score(question, sets[0], [])
    with pytest.raises(ValueError, match="k >= 1"):
        recall.KNSet(np.zeros((0, 2), int), np.zeros(0))
    with pytest.raises(ValueError, match=re.escape("sum |abar| > 0")):
        recall.KNSet(np.array([[0, 1]]), np.array([0.0]))
    with pytest.raises(ValueError, match="outside activations"):
        recall.read_R(question[:2], sets[0])
