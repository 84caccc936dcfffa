"""Token ids outside the vocabulary are refused at every public entry point that takes them (tracers are not
checked), a tokenizer larger than the model's vocabulary is refused at save and load, and interventions refuse
NaN/inf factors and neurons that are not integer pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

from jaxkn import interventions as iv
from jaxkn.config import ModelConfig
from jaxkn.convert import load_checkpoint, save_checkpoint
from jaxkn.convert.loading import load_model
from jaxkn.generate import generate, greedy_generate
from jaxkn.model import forward, init_params
from jaxkn.recall import generated_activations, site_activations
from jaxkn.tokenizer import Tokenizer
from jaxkn.validation import TokenIdError, check_token_ids, max_token_id

CFG = ModelConfig(vocab_size=64, d_model=32, d_ff=48, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  max_position_embeddings=64)
PROMPT, TARGET = [5, 9, 3], [7, 2]


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.PRNGKey(0), scale=0.2)


def _word_tokenizer(n_tokens: int) -> Tokenizer:
    vocab = {f"w{i}": i for i in range(n_tokens)}
    return Tokenizer(tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0")))


BAD = [("negative", [[5, -1, 3]], r"row 0: \[-1\]"), ("vocab", [[5, 9], [64, 70, 3]], r"row 1: \[64, 70\]")]
SUPPRESS = iv.suppress([(0, 1), (1, 7)], CFG)
ENTRY_POINTS = {
    "forward": lambda p, rows: forward(p, np.asarray([r[:2] for r in rows]), CFG),
    "generate": lambda p, rows: generate(p, CFG, rows, 2),
    "greedy_generate": lambda p, rows: greedy_generate(p, CFG, rows, 2),
    "generate_under": lambda p, rows: iv.generate_under(p, CFG, rows, 2, SUPPRESS),
    "site_activations": lambda p, rows: site_activations(p, CFG, rows),
    "generated_activations": lambda p, rows: generated_activations(p, CFG, rows, 2),
    "intervention_effect": lambda p, rows: iv.intervention_effect(p, CFG, rows[-1], TARGET, SUPPRESS),
    "intervention_effect (target)": lambda p, rows: iv.intervention_effect(p, CFG, PROMPT, rows[-1], SUPPRESS),
    "answer_probability": lambda p, rows: iv.answer_probability(p, CFG, rows[-1], TARGET),
    "sweep": lambda p, rows: iv.sweep(p, CFG, rows[-1], TARGET, iv.stack([SUPPRESS, SUPPRESS])),
}
NAMED = {"greedy_generate": "generate", "generate_under": "generate", "generated_activations": "generate",
         "intervention_effect (target)": "intervention_effect"}


@pytest.mark.parametrize("bad, rows, row_match", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_out_of_vocabulary_ids_are_refused_at_each_entry_point(params, entry, bad, rows, row_match):
    where = NAMED.get(entry, entry)
    if entry.startswith(("intervention_effect", "answer_probability", "sweep")):
        row_match = r"row \d: \[" + row_match.split(r"\[", 1)[1]  # (prompt, target) are rows 0 and 1
    elif entry == "forward":
        row_match = {"negative": r"row 0: \[-1\]", "vocab": r"row 1: \[64, 70\]"}[bad]
    with pytest.raises(TokenIdError, match=rf"^{where}\b.*outside the vocabulary \[0, 64\): {row_match}"):
        ENTRY_POINTS[entry](params, rows)


def test_good_ids_pass_and_tracers_are_not_checked(params):
    tokens = jnp.asarray([[5, 9, 3], [1, 2, 63]])
    eager = forward(params, tokens, CFG).logits
    jitted = jax.jit(forward, static_argnames="cfg")(params, tokens, CFG).logits
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-5)
    vmapped = jax.vmap(lambda row: forward(params, row[None], CFG).logits[0])(tokens)
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(eager), rtol=1e-5, atol=1e-5)
    # What the check guards against: under jit nothing checks, and id -1 silently reads embedding row 63.
    jit_forward = jax.jit(forward, static_argnames="cfg")
    wrapped = jit_forward(params, jnp.asarray([[5, 9, -1]]), CFG).logits
    np.testing.assert_array_equal(np.asarray(wrapped), np.asarray(jit_forward(params, jnp.asarray([[5, 9, 63]]),
                                                                              CFG).logits))


def test_the_checker_reports_rows_and_refuses_non_integers():
    check_token_ids([[0, 63], [1]], 64, where="x")  # ragged rows are fine
    with pytest.raises(TokenIdError, match=r"x: .*row 0: \[-2\]; row 2: \[99\]"):
        check_token_ids([[-2, 1], [3], [99]], 64, where="x")
    with pytest.raises(TokenIdError, match="x: token ids must be integers, row 0 holds float"):
        check_token_ids([[1.0, 2.0]], 64, where="x")
    with pytest.raises(TokenIdError, match=r"and 2 more rows"):
        check_token_ids([[-1]] * 7, 64, where="x")
    with pytest.raises(TokenIdError, match="x: expected a row or a batch of rows"):
        check_token_ids([[1, 2], 3], 64, where="x")


def test_a_tokenizer_larger_than_the_vocabulary_is_refused_at_save_and_load(params, tmp_path):
    big = _word_tokenizer(49152)
    with pytest.raises(TokenIdError, match=r"ids up to 49151 but the model's vocabulary has 64 entries"):
        save_checkpoint(tmp_path / "refused", CFG, params, big)
    assert not (tmp_path / "refused").exists()
    out = save_checkpoint(tmp_path / "ck", CFG, params, None)
    big.save(out / "tokenizer")  # a checkpoint assembled by hand with another model's tokenizer
    for load in (load_model, load_checkpoint):
        with pytest.raises(TokenIdError, match=f"{out}: the tokenizer produces ids up to 49151"):
            load(out)
    fits = save_checkpoint(tmp_path / "fits", CFG, params, _word_tokenizer(64))
    assert max_token_id(load_model(fits)[2]) == 63


def test_the_smollm2_tokenizer_does_not_fit_a_64_token_model(params, tmp_path):
    import gguf

    from jaxkn.convert.smollm2 import gguf_path

    smollm2 = Tokenizer.from_gguf_metadata(gguf.GGUFReader(str(gguf_path())))
    with pytest.raises(TokenIdError, match=r"ids up to 49151 but the model's vocabulary has 64"):
        save_checkpoint(tmp_path / "ck", CFG, params, smollm2)


@pytest.mark.parametrize("factor", [float("nan"), float("inf"), -float("inf"), True, "0"])
def test_non_finite_factors_are_refused(factor):
    with pytest.raises(ValueError, match="scale_neurons factor.*finite"):
        iv.scale_neurons([(0, 1)], factor, CFG)


def test_non_finite_sweep_factors_are_refused(params):
    with pytest.raises(ValueError, match=r"sweep_factors factors: \[nan\] is not a finite number"):
        iv.sweep_factors(params, CFG, PROMPT, TARGET, [(0, 1)], [0.0, float("nan"), 2.0])


@pytest.mark.parametrize("neurons, match", [
    ([(True, 5)], r"neuron 0 is \(True, 5\): each neuron must be an integer \(layer, index\) pair"),
    ([(0, 1), (1, False)], r"neuron 1 is \(1, False\)"),
    ([(0, 1.0)], r"neuron 0 is \(0, 1.0\)"),
    ([(0, 1, 2)], r"neuron 0 is \(0, 1, 2\)"),
    ([3], r"neuron 0 is \(3,\)"),
    (np.array([[True, False]]), "bool array"),
    ([(0, 48)], "neuron index 48 is out of range"),
])
def test_malformed_neurons_are_refused(neurons, match):
    with pytest.raises(ValueError, match=match):
        iv.suppress(neurons, CFG)


def test_integer_neurons_of_any_kind_are_accepted():
    want = iv.neuron_array([(0, 1), (1, 7)], CFG.n_layers, CFG.d_ff)
    for neurons in ([[0, 1], [1, 7]], np.array([[1, 7], [0, 1]]), [(np.int64(0), np.int32(1)), (1, 7)],
                    jnp.asarray([[0, 1], [1, 7]]), [(jnp.int32(1), 7), (0, 1)]):
        np.testing.assert_array_equal(iv.neuron_array(neurons, CFG.n_layers, CFG.d_ff), want)
