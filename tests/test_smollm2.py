"""SmolLM2-135M-Instruct converted from its GGUF vs transformers' own GGUF-loaded model (the PyTorch reference)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxkn.model import forward

PROMPTS = [
    "The capital of France is",
    "The capital of Japan is",
    "Q: What is the chemical symbol of gold?\nA:",
    "The Eiffel Tower is located in the city of",
    "Barack Obama was born in",
    "The CEO of Tesla is",
    "The official language of Brazil is",
    "1, 2, 3, 4,",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "<|im_start|>user\nWhat is the capital of Germany?<|im_end|>\n<|im_start|>assistant\n",
    "The author of the Divine Comedy is",
    "In 1969, the first man on the Moon was",
    "Paris is the capital of",
    "Héllo, wörld! Ça va?",
    "The largest planet in the solar system is",
    "Mount Everest is in",
    "Translate to French: cat ->",
    "The opposite of hot is",
    "Once upon a time",
]


def _next_token_logits_jax(cfg, params, rows):
    """Right-padded batch; logits read at each row's last real token."""
    width = max(map(len, rows))
    tokens = np.zeros((len(rows), width), np.int32)
    valid = np.zeros((len(rows), width), bool)
    for b, row in enumerate(rows):
        tokens[b, :len(row)], valid[b, :len(row)] = row, True
    last = np.array([[len(r) - 1] for r in rows], np.int32)
    out = forward(params, jnp.asarray(tokens), cfg, valid=jnp.asarray(valid), logits_at=jnp.asarray(last))
    return np.asarray(out.logits[:, 0])


def test_config_matches_known_shapes(smollm2):
    cfg, params, tokenizer = smollm2
    assert (cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (30, 576, 1536, 9, 3, 64)
    assert cfg.vocab_size == 49152 and cfg.tie_embeddings and cfg.rope_theta == 1e5
    assert "lm_head" not in params
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")


def test_next_token_logits_match_transformers(smollm2, smollm2_hf):
    import torch

    cfg, params, tokenizer = smollm2
    rows = [tokenizer.encode(p) for p in PROMPTS]
    ours = _next_token_logits_jax(cfg, params, rows)
    worst = 0.0
    for row, got in zip(rows, ours):
        with torch.no_grad():
            ref = smollm2_hf(torch.tensor([row])).logits[0, -1].numpy()
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        worst = max(worst, rel)
        assert rel <= 1e-3, f"prompt {tokenizer.decode(row)!r}: relative error {rel:.2e}"
        assert got.argmax() == ref.argmax(), f"prompt {tokenizer.decode(row)!r}: argmax differs"
    print(f"SmolLM2 next-token logits: worst relative error {worst:.2e} over {len(rows)} prompts")


def test_greedy_generation_matches_transformers(smollm2, smollm2_hf):
    import torch

    from jaxkn.generate import greedy_generate

    cfg, params, tokenizer = smollm2
    rows = [tokenizer.encode(p) for p in PROMPTS[:10]]
    ours = greedy_generate(params, cfg, rows, 16, eos_id=tokenizer.eos_id)
    # One left-padded batch in torch too (16 decoding steps instead of 160; padding is masked exactly).
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        out = smollm2_hf.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                                  eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
    for row, got, new in zip(rows, ours, out[:, width:].tolist()):
        want = new[:new.index(tokenizer.eos_id) + 1] if tokenizer.eos_id in new else new
        assert list(got) == want, f"prompt {tokenizer.decode(row)!r}: {tokenizer.decode(got)!r} vs {tokenizer.decode(want)!r}"


@pytest.mark.parametrize("prompt, answer", [("The capital of France is", " Paris"),
                                            ("The capital of Japan is", " Tokyo")])
def test_known_facts(smollm2, prompt, answer):
    cfg, params, tokenizer = smollm2
    logits = _next_token_logits_jax(cfg, params, [tokenizer.encode(prompt)])
    assert tokenizer.decode([int(logits[0].argmax())]) == answer
