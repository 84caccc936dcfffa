"""Named model shapes for the benchmarks: each is one HF `config.json`-style dict, read into both frameworks.

The same dict builds the jaxkn `ModelConfig` (through `ModelConfig.from_hf_dict`, the converter's own reader)
and the transformers config, so the two sides cannot disagree on a shape, a rope setting or a window.
Weights are random (benchmarks never download checkpoints; speed does not depend on their values).

Shapes:
- llama2-7b:  D=4096 F=11008 L=32 H=32 K=32 V=32000 (MHA, rope theta 1e4, context 4096).
- llama3-8b:  D=4096 F=14336 L=32 H=32 K=8  V=128256 (GQA, LLaMA-3.1 rope scaling, theta 5e5).
- mistral-7b: D=4096 F=14336 L=32 H=32 K=8  V=32000 (GQA, sliding window 4096).
- smollm2:    D=576  F=1536  L=30 H=9  K=3  E=64 V=49152 (SmolLM2-135M, tied embeddings, theta 1e5).
- tiny:       a few-layer GQA model for CI smoke runs.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from jaxkn.config import ModelConfig
from jaxkn.model import param_shapes

SHAPES: dict[str, dict[str, Any]] = {
    "llama2-7b": dict(
        model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0), bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False),
    "llama3-8b": dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=8192),
        bos_token_id=128000, eos_token_id=128001, tie_word_embeddings=False),
    "mistral-7b": dict(
        model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0), sliding_window=4096, bos_token_id=1,
        eos_token_id=2, tie_word_embeddings=False),
    "smollm2": dict(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_parameters=dict(rope_type="default", rope_theta=100000.0), bos_token_id=1,
        eos_token_id=2, tie_word_embeddings=True),
    "tiny": dict(
        model_type="llama", vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0), bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False),
}


def hf_dict(name: str, dtype: str = "float32") -> dict[str, Any]:
    """The shape as an HF config dict (a copy), with `dtype` set."""
    if name not in SHAPES:
        raise ValueError(f"unknown model shape {name!r}; choose one of {sorted(SHAPES)}")
    shape = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SHAPES[name].items()}
    return dict(shape, dtype=dtype)


def jaxkn_config(name: str, dtype: str = "float32", mlp_impl: str = "xla") -> ModelConfig:
    """The jaxkn `ModelConfig` of a named shape, read by the same reader that converts real checkpoints."""
    return ModelConfig.from_hf_dict(hf_dict(name, dtype)).replace(mlp_impl=mlp_impl)


def hf_config(name: str, dtype: str = "float32"):
    """The transformers config (LlamaConfig or MistralConfig) of a named shape."""
    import transformers

    kw = hf_dict(name, dtype)
    model_type = kw.pop("model_type")
    cls = transformers.MistralConfig if model_type == "mistral" else transformers.LlamaConfig
    return cls(**kw)


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the model (embedding and head counted once each; one when tied)."""
    shapes = jax.tree_util.tree_leaves(param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple))
    return sum(math.prod(s) for s in shapes)


__all__ = ["SHAPES", "hf_dict", "jaxkn_config", "hf_config", "parameter_count"]
