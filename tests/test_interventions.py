"""Interventions: parity with a PyTorch hook, vmapped sweeps vs separate calls, identities, random controls,
teacher-forced answer probabilities, generation under an intervention, and bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxkn import interventions as iv
from jaxkn.generate import generate
from jaxkn.model import forward

PROMPT = [5, 9, 13, 2, 7, 30, 11]
TARGET = [8, 21, 3]
NEURONS = [(0, 3), (1, 7), (1, 40), (2, 11), (2, 0)]
FACTORS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, -1.0, 10.0]


def torch_logits_with_hook(hf, tokens, neurons, factor, attention_mask=None):
    """Multiplies the chosen neurons of the down_proj input at each row's last real token by `factor`."""
    tokens = torch.tensor(np.asarray(tokens))
    mask = torch.ones_like(tokens) if attention_mask is None else torch.tensor(np.asarray(attention_mask))
    last = mask.shape[1] - 1 - torch.argmax(mask.flip(1), dim=1)
    handles = []
    for layer in sorted({l for l, _ in neurons}):
        idx = torch.tensor([i for l, i in neurons if l == layer])

        def pre_hook(module, args, idx=idx):
            h = args[0].clone()
            rows = torch.arange(h.shape[0])
            h[rows[:, None], last[:, None], idx[None, :]] *= factor
            return (h,)

        handles.append(hf.model.layers[layer].mlp.down_proj.register_forward_pre_hook(pre_hook))
    try:
        with torch.no_grad():
            return hf(tokens, attention_mask=mask).logits.numpy()
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("name,factor", [("enhance", 2.0), ("suppress", 0.0)])
def test_matches_a_pytorch_hook(tiny, name, factor):
    hf, cfg, params = tiny
    tokens = np.asarray([PROMPT])
    intervention = getattr(iv, name)(NEURONS, cfg)
    got = forward(params, tokens, cfg, edits=iv.site_edits(intervention, np.ones_like(tokens, bool))).logits
    ref = torch_logits_with_hook(hf, tokens, NEURONS, factor)
    assert np.abs(np.asarray(got) - ref).max() <= 1e-4
    # The intervention does something: the last position's logits move.
    plain = torch_logits_with_hook(hf, tokens, NEURONS, 1.0)
    assert np.abs(ref[0, -1] - plain[0, -1]).max() > 1e-5


def test_last_means_last_real_token_in_padded_batches(tiny_models):
    hf, cfg, params = tiny_models["llama2"]
    tokens = np.asarray([PROMPT, PROMPT[:4] + [0, 0, 0]])
    valid = np.asarray([[1] * 7, [1] * 4 + [0] * 3], bool)
    intervention = iv.suppress(NEURONS, cfg)
    got = forward(params, tokens, cfg, valid=valid, edits=iv.site_edits(intervention, valid)).logits
    ref = torch_logits_with_hook(hf, tokens, NEURONS, 0.0, attention_mask=valid.astype(np.int64))
    np.testing.assert_allclose(np.asarray(got)[valid], ref[valid], atol=1e-4)


def test_vmapped_sweep_equals_separate_calls(tiny_models):
    _, cfg, params = tiny_models["llama3"]
    swept = iv.sweep_factors(params, cfg, PROMPT, TARGET, NEURONS, FACTORS)
    separate = [iv.answer_probability(params, cfg, PROMPT, TARGET, iv.scale_neurons(NEURONS, f, cfg))
                for f in FACTORS]
    per_token = np.stack([np.asarray(s.per_token) for s in separate])
    # The factor arrays are identical; only XLA's batched vs unbatched programs differ, which may reorder
    # float32 sums (METHOD §9; measured here ~1e-7 relative), so the bound is float32 rounding, not bitwise.
    np.testing.assert_allclose(np.asarray(swept.per_token), per_token, rtol=1e-6, atol=1e-9)
    assert len(set(np.round(np.asarray(swept.first), 6))) > 4  # the factors really differ in effect
    sets = iv.sweep_sets(params, cfg, PROMPT, TARGET, [NEURONS[:2], NEURONS[2:]], 0.0)
    for k, s in enumerate([NEURONS[:2], NEURONS[2:]]):
        one = iv.answer_probability(params, cfg, PROMPT, TARGET, iv.suppress(s, cfg))
        np.testing.assert_allclose(np.asarray(sets.per_token[k]), np.asarray(one.per_token), rtol=1e-5, atol=1e-7)


def test_factor_one_is_bitwise_noop(tiny):
    _, cfg, params = tiny
    tokens = np.asarray([PROMPT])
    valid = np.ones_like(tokens, bool)
    plain = forward(params, tokens, cfg).logits
    for positions in ("last", "all", np.asarray([1, 0, 1, 1, 0, 0, 1])):
        one = iv.scale_neurons(NEURONS, 1.0, cfg, positions=positions)
        got = forward(params, tokens, cfg, edits=iv.site_edits(one, valid)).logits
        np.testing.assert_array_equal(np.asarray(got), np.asarray(plain))
    before, after = iv.intervention_effect(params, cfg, PROMPT, TARGET, iv.scale_neurons(NEURONS, 1.0, cfg))
    np.testing.assert_array_equal(np.asarray(before.per_token), np.asarray(after.per_token))


def test_explicit_position_masks(tiny_models):
    _, cfg, params = tiny_models["llama3"]
    tokens = np.asarray([PROMPT])
    valid = np.ones_like(tokens, bool)

    def logits(positions):
        return np.asarray(forward(params, tokens, cfg, edits=iv.site_edits(
            iv.enhance(NEURONS, cfg, positions=positions), valid)).logits)

    np.testing.assert_array_equal(logits(np.ones(7)), logits("all"))
    np.testing.assert_array_equal(logits(np.eye(7)[-1]), logits("last"))
    np.testing.assert_array_equal(logits(np.ones(3)), logits(np.r_[np.ones(3), np.zeros(4)]))  # shorter: padded
    swept = iv.sweep_factors(params, cfg, PROMPT, TARGET[:1], NEURONS, [0.0, 2.0], positions=np.ones(4))
    one = iv.answer_probability(params, cfg, PROMPT, TARGET[:1], iv.enhance(NEURONS, cfg, positions=np.ones(4)))
    np.testing.assert_allclose(float(swept.first[1]), float(one.first), rtol=1e-6)
    with pytest.raises(ValueError, match="covers 9 positions"):
        iv.site_edits(iv.enhance(NEURONS, cfg, positions=np.ones(9)), valid)


def test_random_control_counts_and_seed(tiny_models):
    _, cfg, _ = tiny_models["llama2"]
    counts = iv.per_layer_counts(NEURONS, cfg.n_layers, cfg.d_ff)
    a = iv.random_neurons(NEURONS, cfg, seed=3)
    np.testing.assert_array_equal(np.bincount(a[:, 0], minlength=cfg.n_layers), counts)
    assert len(np.unique(a, axis=0)) == len(a)  # without replacement
    np.testing.assert_array_equal(a, iv.random_neurons(NEURONS, cfg, seed=3))
    assert not np.array_equal(a, iv.random_neurons(NEURONS, cfg, seed=4))
    for seed in range(20):
        b = iv.random_neurons(NEURONS, cfg, seed, exclude_original=True)
        assert not {tuple(x) for x in b} & set(NEURONS)
    control = iv.random_control(NEURONS, 0.0, cfg, seed=3)
    np.testing.assert_array_equal(np.argwhere(np.asarray(control.factor) != 1.0), a)


def test_teacher_forcing_reads_each_answer_token_at_its_own_position(tiny_models):
    _, cfg, params = tiny_models["mistral"]
    for positions in ("last", "all"):
        intervention = iv.enhance(NEURONS, cfg, positions=positions)
        got = iv.answer_probability(params, cfg, PROMPT, TARGET, intervention)
        for k, y in enumerate(TARGET):
            text = np.asarray([PROMPT + TARGET[:k]])
            edits = iv.site_edits(intervention, np.ones_like(text, bool))
            probs = jax.nn.softmax(forward(params, text, cfg, edits=edits).logits[0, -1])
            np.testing.assert_allclose(float(got.per_token[k]), float(probs[y]), rtol=1e-5)
        np.testing.assert_allclose(float(got.joint), float(np.prod(np.asarray(got.per_token))), rtol=1e-6)
        assert float(got.first) == float(got.per_token[0])


def test_compose_multiplies_or_chains(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    tokens = np.asarray([PROMPT])
    valid = np.ones_like(tokens, bool)
    a, b = iv.enhance(NEURONS[:3], cfg), iv.scale_neurons(NEURONS[1:], 0.5, cfg)
    merged = iv.compose(a, b)
    assert isinstance(merged, iv.Intervention)
    assert float(merged.factor[1, 7]) == 1.0 and float(merged.factor[0, 3]) == 2.0
    chained = forward(params, tokens, cfg, edits=iv.site_edits((a, b), valid)).logits
    got = forward(params, tokens, cfg, edits=iv.site_edits(merged, valid)).logits
    np.testing.assert_allclose(np.asarray(got), np.asarray(chained), atol=1e-6)
    mixed = iv.compose(a, iv.suppress(NEURONS, cfg, positions="all"))
    assert isinstance(mixed, tuple) and len(mixed) == 2
    assert len(iv.site_edits(mixed, valid)) == 2


def test_generation_under_intervention_is_the_rerun_definition(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    intervention = iv.suppress(NEURONS, cfg)
    gen = iv.generate_under(params, cfg, [PROMPT], 5, intervention)
    text = list(PROMPT)
    for _ in range(5):  # "last": only the newest position is scaled at each step
        t = np.asarray([text])
        logits = forward(params, t, cfg, edits=iv.site_edits(intervention, np.ones_like(t, bool))).logits
        text.append(int(jnp.argmax(logits[0, -1])))
    assert [int(x) for x in gen.tokens[0]] == text[len(PROMPT):]
    all_pos = iv.generate_under(params, cfg, [PROMPT], 5, iv.suppress(NEURONS, cfg, positions="all"))
    direct = generate(params, cfg, [PROMPT], 5, scale=intervention.to_scale(), mode="all")
    np.testing.assert_array_equal(all_pos.tokens, direct.tokens)


def test_bad_inputs_are_named(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    with pytest.raises(ValueError, match=r"neuron \(3, 1\): layer 3 is out of range"):
        iv.enhance([(0, 1), (3, 1)], cfg)
    with pytest.raises(ValueError, match=r"neuron \(1, 48\): neuron index 48 is out of range"):
        iv.suppress([(1, 48)], cfg)
    with pytest.raises(ValueError, match=r"layer -1 is out of range"):
        iv.suppress([(-1, 2)], cfg)
    with pytest.raises(ValueError, match="empty neuron set"):
        iv.suppress([], cfg)
    with pytest.raises(ValueError, match="empty neuron set"):
        iv.random_control([], 0.0, cfg, seed=0)
    with pytest.raises(ValueError, match="integer"):
        iv.suppress([(0.5, 1)], cfg)
    with pytest.raises(ValueError, match="positions"):
        iv.suppress(NEURONS, cfg, positions="first")
    with pytest.raises(ValueError, match="site"):
        iv.suppress(NEURONS, cfg, site="down")
    with pytest.raises(ValueError, match="generation"):
        iv.generate_under(params, cfg, [PROMPT], 2, iv.suppress(NEURONS, cfg, positions=np.ones(3)))
    with pytest.raises(ValueError, match="no tokens"):
        iv.answer_probability(params, cfg, PROMPT, [])


SHOTS = ("Q: What is the capital of Spain?\nA: Madrid\nQ: Who wrote Hamlet?\nA: William Shakespeare\n"
         "Q: What is the chemical symbol of gold?\nA: Au\n")  # METHOD §6.4 style; none is a test fact
FACTS = [([f"What is the capital of {c}?", f"Which city is the capital of {c}?", f"{c}'s capital is which city?"], a)
         for c, a in (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"))]


def test_smollm2_suppressing_knowledge_neurons_beats_a_random_control(smollm2):
    """Refined KNs (METHOD §4: coarse t = 0.2 in >= half of 3 paraphrases) of three facts, suppressed x0 at the
    last position, lower P(gold) more than a seeded random set with the same count per layer, on each
    paraphrase. Measured: 4, 9, 8 refined neurons; mean drops per fact 0.43, 0.81, 0.62 (e.g. P 0.97 -> 0.42,
    0.67 -> 0.011, 0.51 -> 0.007 on the first paraphrases); random control drops within +-0.01."""
    from jaxkn.attribution import AttributionConfig, answer_token_ids
    from jaxkn.knowledge_neurons import KnowledgeNeurons

    cfg, params, tok = smollm2
    # Gauss-Legendre with 6 points: the same integral as m = 20 Riemann for a third of the test's time.
    finder = KnowledgeNeurons(cfg, params, tok, AttributionConfig(quadrature="gauss_legendre", steps=6))
    kn_drops, control_drops = [], []
    for f, (questions, answer) in enumerate(FACTS):
        prompts = [SHOTS + f"Q: {q}\nA:" for q in questions]
        neurons = finder.get_refined_neurons(prompts, answer, coarse_adaptive_threshold=0.2, refine_rule="fraction")
        assert neurons, f"no refined neuron for {answer!r}"
        control = iv.random_neurons(neurons, cfg, seed=f)
        for text in prompts:
            prompt, gold = answer_token_ids(tok, text, answer)
            before = float(iv.answer_probability(params, cfg, prompt, gold[:1]).first)
            assert before > 0.3, f"SmolLM2 should know {answer!r} (P = {before:.3f})"
            after = np.asarray(iv.sweep_sets(params, cfg, prompt, gold[:1], [neurons, control], 0.0).first)
            kn_drops.append(before - after[0])
            control_drops.append(before - after[1])
    print(f"P(gold) drop, knowledge neurons: {np.round(kn_drops, 3)}; random control: {np.round(control_drops, 3)}")
    assert np.mean(kn_drops) > np.mean(control_drops) + 0.1
