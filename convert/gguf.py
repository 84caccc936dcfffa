"""Reads a llama.cpp `.gguf` file into (ModelConfig, params, Tokenizer), without torch.

Conventions:
- `general.architecture` is one of `llama` (LLaMA-2/3-style, Mistral and SmolLM2 files), `qwen2`, `qwen3`,
  `gemma2`, `gemma3` (text); every `<arch>.*` key is handled or rejected by name, never silently dropped. The
  Qwen and Gemma metadata is translated to HF config keys and read by `ModelConfig.from_hf_dict`, so both
  sources share one reading of each family.
- Tensors are dequantised to float32 with `gguf.quants.dequantize` (F32, F16, BF16, Q4_0/1, Q5_0/1, Q8_0 and the
  K-quants the package implements), reshaped from GGUF's reversed shape to numpy order (torch's [out, in]),
  and mapped through `convert.mapping.gguf_names(cfg)`, which also undoes llama.cpp's Q/K row permutation
  (llama only) and its (1 + w) storage of Gemma's norms.
- Embeddings are tied when the file has no `output.weight`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxkn.config import ModelConfig, RopeScaling, UnsupportedConfigError
from jaxkn.convert.mapping import (
    GGUF_IGNORED_SUFFIXES,
    CheckpointError,
    assemble_params,
    gguf_names,
    gguf_transforms,
)
from jaxkn.tokenizer import Tokenizer

SUPPORTED_GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3")
_MODEL_TYPES = {"qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3": "gemma3_text"}
# `llama.<key>` metadata that the reader turns into config fields (or checks).
_HANDLED = {
    "block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "rope.freq_base", "attention.layer_norm_rms_epsilon", "rope.dimension_count",
    "vocab_size", "attention.key_length", "attention.value_length", "rope.scaling.type", "rope.scaling.factor",
    "rope.scaling.original_context_length",
}
# `llama.<key>` metadata with no effect on the forward pass.
_IGNORED = {"rope.scaling.finetuned", "tensor_data_layout"}
# Gemma keys beyond the common ones (llama.cpp's names).
_GEMMA_HANDLED = {
    "gemma2": {"attention.sliding_window", "attn_logit_softcapping", "final_logit_softcapping",
               "attention.sliding_window_pattern", "attention.scale"},
    "gemma3": {"attention.sliding_window", "final_logit_softcapping", "attention.sliding_window_pattern",
               "attention.scale", "rope.freq_base_swa"},
}
# llama.cpp scales Gemma's 27B attention by 1/sqrt(d_model / heads) instead of 1/sqrt(head_dim) and knows that
# model only by its depth (GGUF has no query_pre_attn_scalar); without `attention.scale`, jaxkn does the same.
_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}


def open_gguf(path: str | Path):
    """A `gguf.GGUFReader` for `path`; an unreadable or truncated file raises `CheckpointError` naming it."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GGUF file {path} does not exist")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError/IndexError/struct errors on damaged files
        raise CheckpointError(f"cannot read GGUF file {path} (truncated or corrupt?): {type(e).__name__}: {e}") from e


def _meta(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_config(reader, param_dtype: str = "float32") -> ModelConfig:
    """ModelConfig from a GGUF file's metadata (vocabulary size from its token list)."""
    arch = _meta(reader, "general.architecture")
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise UnsupportedConfigError(f"unsupported GGUF architecture general.architecture={arch!r}; "
                                     f"jaxkn reads {SUPPORTED_GGUF_ARCHITECTURES}")
    keys = {k[len(arch) + 1:] for k in reader.fields if k.startswith(arch + ".")}
    unknown = sorted(keys - _HANDLED - _GEMMA_HANDLED.get(arch, set()) - _IGNORED)
    if unknown:
        raise UnsupportedConfigError(f"unsupported GGUF metadata for {arch}: {[f'{arch}.{k}' for k in unknown]}")
    if any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise UnsupportedConfigError("GGUF rope_freqs.weight (per-frequency rope factors, LLaMA-3.1 style) is not "
                                     "supported; convert the model from its HF folder instead")

    def get(key, default=None):
        return _meta(reader, f"{arch}.{key}", default)

    d_model, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(get("attention.key_length", d_model // n_heads))
    if int(get("attention.value_length", head_dim)) != head_dim:
        raise UnsupportedConfigError("GGUF attention.value_length != key_length is not supported")
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise UnsupportedConfigError(f"partial rotary embeddings (rope.dimension_count="
                                     f"{get('rope.dimension_count')} < head_dim={head_dim}) are not supported")
    tokens = _meta(reader, "tokenizer.ggml.tokens")
    vocab = len(tokens) if tokens is not None else get("vocab_size")
    if vocab is None:
        raise CheckpointError("GGUF file has neither tokenizer.ggml.tokens nor a vocab_size")
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    if arch != "llama":
        hf = dict(
            model_type=_MODEL_TYPES[arch], vocab_size=int(vocab), hidden_size=d_model, num_attention_heads=n_heads,
            intermediate_size=int(get("feed_forward_length")), num_hidden_layers=int(get("block_count")),
            num_key_value_heads=int(get("attention.head_count_kv", n_heads)), head_dim=head_dim,
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
            max_position_embeddings=int(get("context_length", 4096)), tie_word_embeddings=tied,
            dtype=param_dtype, bos_token_id=_meta(reader, "tokenizer.ggml.bos_token_id"),
            eos_token_id=_meta(reader, "tokenizer.ggml.eos_token_id"),
            pad_token_id=_meta(reader, "tokenizer.ggml.padding_token_id"),
            **_family_hf_keys(arch, get, d_model, n_heads, head_dim),
        )
        return ModelConfig.from_hf_dict(hf)
    return ModelConfig(
        model_type="llama", vocab_size=int(vocab), d_model=d_model, d_ff=int(get("feed_forward_length")),
        n_layers=int(get("block_count")), n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)), head_dim=head_dim,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)), rope_scaling=_rope_scaling(get),
        max_position_embeddings=int(get("context_length", 4096)), tie_embeddings=tied, param_dtype=param_dtype,
        bos_token_id=_meta(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_meta(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=_meta(reader, "tokenizer.ggml.padding_token_id"),
    )


def _family_hf_keys(arch: str, get, d_model: int, n_heads: int, head_dim: int) -> dict:
    """The HF config keys of a Qwen or Gemma GGUF file beyond the common shape keys."""
    scaling = _rope_scaling(get)
    out = dict(rope_theta=float(get("rope.freq_base", 1_000_000.0 if arch == "gemma3" else 10000.0)))
    if scaling is not None:
        out["rope_scaling"] = dict(rope_type=scaling.rope_type, factor=scaling.factor)
    if arch not in _GEMMA_HANDLED:
        return out
    n_layers = int(get("block_count"))
    scale = get("attention.scale")
    if scale is not None:  # float32 metadata: recover the integer scalars real models use exactly
        scalar = 1.0 / float(scale) ** 2
        out["query_pre_attn_scalar"] = round(scalar) if abs(scalar - round(scalar)) < 1e-4 * scalar else scalar
    else:
        out["query_pre_attn_scalar"] = d_model // n_heads if n_layers == _GEMMA_27B_LAYERS[arch] else head_dim
    out["sliding_window"] = int(get("attention.sliding_window", 4096))
    pattern = get("attention.sliding_window_pattern")
    if isinstance(pattern, list | tuple):  # per layer: True = sliding
        out["layer_types"] = ["sliding_attention" if p else "full_attention" for p in pattern]
    elif pattern is not None:
        out["sliding_window_pattern"] = int(pattern)
    # llama.cpp's defaults where a file omits the soft caps: Gemma 2 has both, Gemma 3 neither
    out["final_logit_softcapping"] = get("final_logit_softcapping", 30.0 if arch == "gemma2" else None)
    if arch == "gemma2":
        out["attn_logit_softcapping"] = get("attn_logit_softcapping", 50.0)
    else:
        out["rope_local_base_freq"] = float(get("rope.freq_base_swa", 10_000.0))
    return out


def _rope_scaling(get) -> RopeScaling | None:
    kind = get("rope.scaling.type", "none")
    if kind == "none":
        return None
    if kind != "linear":
        raise UnsupportedConfigError(f"GGUF rope.scaling.type={kind!r} is not supported (supported: none, linear)")
    return RopeScaling(rope_type="linear", factor=float(get("rope.scaling.factor")))


def read_tensor(tensor) -> np.ndarray:
    """One GGUF tensor as float32 numpy in numpy order (GGUF lists dimensions innermost first)."""
    import gguf

    try:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as e:
        raise CheckpointError(f"GGUF tensor {tensor.name!r}: {e}") from e
    return np.asarray(values, dtype=np.float32).reshape(tuple(int(n) for n in reversed(tensor.shape)))


def convert_gguf(path: str | Path, dtype: str | None = None) -> tuple[ModelConfig, dict, Tokenizer]:
    """(config, params as numpy, tokenizer) from a `.gguf` file, converted tensor by tensor.

    Args:
      path: the `.gguf` file.
      dtype: stored dtype of the params ("float32" by default: GGUF weights are dequantised to float32).
    """
    reader = open_gguf(path)
    cfg = gguf_config(reader, param_dtype=dtype or "float32")
    tensors = {t.name: t for t in reader.tensors}
    try:
        params = assemble_params(cfg, lambda name: read_tensor(tensors[name]), set(tensors), names=gguf_names(cfg),
                                 transforms=gguf_transforms(cfg), ignored_suffixes=GGUF_IGNORED_SUFFIXES)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
    except (ValueError, IndexError, TypeError) as e:  # a tensor whose bytes run past a truncated file
        raise CheckpointError(f"cannot read tensors of GGUF file {path} (truncated or corrupt?): {e}") from e
    return cfg, params, Tokenizer.from_gguf_metadata(reader)
