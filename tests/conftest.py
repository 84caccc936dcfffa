"""Shared fixtures: tiny random HF models (built offline) and the real SmolLM2 checkpoint (converted once)."""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import numpy as np
import pytest

from jaxkn.runtime import enable_compilation_cache

enable_compilation_cache()

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128)
TINY_VARIANTS = {
    "llama2": dict(model_type="llama"),
    "llama3": dict(model_type="llama", tie_word_embeddings=True,
                   rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                        high_freq_factor=4.0, original_max_position_embeddings=16)),
    "mistral": dict(model_type="mistral", sliding_window=4),
}


def make_tiny_hf(variant: str, seed: int = 0):
    """A tiny random transformers model of one LLaMA-family variant (GQA in all of them), in float32, eval mode."""
    import torch
    import transformers

    torch.manual_seed(seed)
    kw = dict(TINY, **TINY_VARIANTS[variant])
    model_type = kw.pop("model_type")
    cls_cfg, cls_model = ((transformers.MistralConfig, transformers.MistralForCausalLM) if model_type == "mistral"
                          else (transformers.LlamaConfig, transformers.LlamaForCausalLM))
    model = cls_model(cls_cfg(**kw)).eval()
    return model


def tiny_jax_from_hf(hf_model):
    """(cfg, params) converted in memory from a transformers model (the on-disk path is tested in test_convert)."""
    import jax.numpy as jnp

    from jaxkn.config import ModelConfig
    from jaxkn.convert.mapping import assemble_params

    cfg = ModelConfig.from_hf_dict(hf_model.config.to_dict())
    sd = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    params = jax.tree_util.tree_map(jnp.asarray, assemble_params(cfg, sd.__getitem__, set(sd)))
    return cfg, params


@pytest.fixture(scope="session", params=sorted(TINY_VARIANTS))
def tiny_variant(request):
    return request.param


@pytest.fixture(scope="session")
def tiny_models():
    """variant -> (hf_model, cfg, params), built once per session."""
    out = {}
    for variant in TINY_VARIANTS:
        hf = make_tiny_hf(variant)
        out[variant] = (hf,) + tiny_jax_from_hf(hf)
    return out


@pytest.fixture(scope="session")
def tiny(tiny_models, tiny_variant):
    return tiny_models[tiny_variant]


@pytest.fixture(scope="session")
def smollm2():
    """(cfg, params, tokenizer) of the embedded SmolLM2-135M-Instruct, converted once and cached on disk."""
    import jaxkn

    return jaxkn.load_default_model()


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture(scope="session")
def smollm2_hf():
    """transformers' own SmolLM2 loaded from the same GGUF file (float32, eval): the PyTorch reference."""
    import torch
    import transformers

    from jaxkn.convert.smollm2 import gguf_path

    path = gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer():
    """transformers' tokenizer built from the same GGUF file (the reference for jaxkn.Tokenizer)."""
    import transformers

    from jaxkn.convert.smollm2 import gguf_path

    path = gguf_path()
    return transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, smollm2):
    """A tiny random LLaMA saved as an HF folder, with SmolLM2's tokenizer (so its vocabulary size)."""
    _, _, tokenizer = smollm2
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), tokenizer, intermediate_size=48)


def save_tiny_llama(folder, tokenizer, *, intermediate_size: int):
    """Saves a tiny random LLaMA (2 layers, width 32, seed 0) with `tokenizer` (so its vocabulary size) as an
    HF folder; returns the folder."""
    import torch
    import transformers

    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                                      intermediate_size=intermediate_size, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                      eos_token_id=tokenizer.eos_id, bos_token_id=tokenizer.bos_id,
                                      pad_token_id=tokenizer.eos_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save(folder)
    return folder


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Frees JAX's in-memory compiled programs after each test module: a test worker that kept every program of
    650 tests alive crashed inside XLA's CPU compiler (segfault) in whichever late test compiled next, never when
    that test ran alone. Recompiling later costs a persistent-cache read."""
    yield
    import gc

    jax.clear_caches()
    gc.collect()
