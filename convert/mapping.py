"""Declarative name maps from checkpoint tensors to the jaxkn params pytree.

One table per source format: jaxkn leaf -> source tensor name (with `{i}` for the layer), plus the per-key
transform. `assemble_params` applies them and checks the postconditions: every target leaf is filled exactly
once with the expected shape, and every source tensor is used or explicitly ignored; errors name both paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from jaxkn.config import ModelConfig
from jaxkn.model import param_shapes


class CheckpointError(ValueError):
    """A checkpoint is missing a tensor, has one of the wrong shape, or is unreadable."""


# jaxkn leaf path -> (HF tensor name, transform). Torch's nn.Linear stores [out, in]; jaxkn stores [in, out].
HF_NAMES: dict[str, tuple[str, str]] = {
    "embed": ("model.embed_tokens.weight", "none"),
    "final_norm": ("model.norm.weight", "none"),
    "lm_head": ("lm_head.weight", "transpose"),
    "layers/attn_norm": ("model.layers.{i}.input_layernorm.weight", "none"),
    "layers/wq": ("model.layers.{i}.self_attn.q_proj.weight", "transpose"),
    "layers/wk": ("model.layers.{i}.self_attn.k_proj.weight", "transpose"),
    "layers/wv": ("model.layers.{i}.self_attn.v_proj.weight", "transpose"),
    "layers/wo": ("model.layers.{i}.self_attn.o_proj.weight", "transpose"),
    "layers/mlp_norm": ("model.layers.{i}.post_attention_layernorm.weight", "none"),
    "layers/w_gate": ("model.layers.{i}.mlp.gate_proj.weight", "transpose"),
    "layers/w_up": ("model.layers.{i}.mlp.up_proj.weight", "transpose"),
    "layers/w_down": ("model.layers.{i}.mlp.down_proj.weight", "transpose"),
}
# Source tensors that carry nothing the forward pass needs.
HF_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# Extra leaves by family (jaxkn leaf -> HF name); Gemma renames the MLP's norm and adds the sandwich norms.
_HF_QKV_BIAS = {f"layers/b{x}": (f"model.layers.{{i}}.self_attn.{x}_proj.bias", "none") for x in "qkv"}
_HF_QK_NORM = {f"layers/{x}_norm": (f"model.layers.{{i}}.self_attn.{x}_norm.weight", "none") for x in "qk"}
_HF_SANDWICH = {
    "layers/post_attn_norm": ("model.layers.{i}.post_attention_layernorm.weight", "none"),
    "layers/mlp_norm": ("model.layers.{i}.pre_feedforward_layernorm.weight", "none"),
    "layers/post_mlp_norm": ("model.layers.{i}.post_feedforward_layernorm.weight", "none"),
}


def hf_names(cfg: ModelConfig) -> dict[str, tuple[str, str]]:
    """The HF name map for `cfg`'s family: HF_NAMES plus the leaves its options add."""
    return _family_names(cfg, HF_NAMES, _HF_QKV_BIAS, _HF_QK_NORM, _HF_SANDWICH, {})


def _family_names(cfg: ModelConfig, base, qkv_bias, qk_norm, sandwich, norm_transform) -> dict[str, tuple[str, str]]:
    names = dict(base)
    if cfg.qkv_bias:
        names.update(qkv_bias)
    if cfg.qk_norm:
        names.update(qk_norm)
    if cfg.sandwich_norms:
        names.update(sandwich)
    for leaf, transform in norm_transform.items():
        if leaf in names:
            names[leaf] = (names[leaf][0], transform)
    return names

TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda a: a,
    "transpose": lambda a: a.T,
}


def _flat_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    shapes = param_shapes(cfg)
    flat = {k: v for k, v in shapes.items() if k != "layers"}
    flat.update({f"layers/{k}": v for k, v in shapes["layers"].items()})
    return flat


def assemble_params(
    cfg: ModelConfig,
    get_tensor: Callable[[str], np.ndarray],
    source_names: set[str],
    names: Mapping[str, tuple[str, str]] | None = None,
    transforms: Mapping[str, Callable[[np.ndarray], np.ndarray]] = TRANSFORMS,
    ignored_suffixes: tuple[str, ...] = HF_IGNORED_SUFFIXES,
    dtype: str | None = None,
) -> dict:
    """Builds the params pytree (numpy arrays) tensor by tensor.

    Args:
      cfg: target config; shapes are checked against `param_shapes(cfg)`.
      get_tensor: reads one source tensor by name (as float32/float16/bfloat16 numpy).
      source_names: every tensor name the source holds (to report unused ones).
      names / transforms: the declarative map for this source format (default: `hf_names(cfg)`).
      dtype: stored dtype of the result (default cfg.param_dtype).
    """
    names = hf_names(cfg) if names is None else names
    dtype = np.dtype(_np_dtype(dtype or cfg.param_dtype))
    used: set[str] = set()
    flat: dict[str, np.ndarray] = {}
    for leaf, shape in _flat_shapes(cfg).items():
        if leaf not in names:
            raise CheckpointError(f"no source mapping for jaxkn param {leaf!r}")
        pattern, transform = names[leaf]
        per_layer = leaf.startswith("layers/")
        src_names = [pattern.format(i=i) for i in range(cfg.n_layers)] if per_layer else [pattern]
        arrays = []
        for name in src_names:
            if name not in source_names:
                raise CheckpointError(f"checkpoint is missing tensor {name!r} (needed for jaxkn param {leaf!r})")
            arr = transforms[transform](np.asarray(get_tensor(name)))
            want = shape[1:] if per_layer else shape
            if tuple(arr.shape) != tuple(want):
                raise CheckpointError(
                    f"tensor {name!r} has shape {tuple(arr.shape)} after {transform!r}, but jaxkn param "
                    f"{leaf!r} needs {tuple(want)} for this config"
                )
            arrays.append(arr.astype(dtype))
            used.add(name)
        flat[leaf] = np.stack(arrays) if per_layer else arrays[0]
    unused = sorted(n for n in source_names - used if not n.endswith(ignored_suffixes))
    if cfg.tie_embeddings:
        unused = [n for n in unused if n != names["lm_head"][0]]  # some tied checkpoints still ship a copy
    if unused:
        raise CheckpointError(f"checkpoint has tensors jaxkn does not use: {unused[:8]}"
                              f"{' ...' if len(unused) > 8 else ''}")
    params = {k: v for k, v in flat.items() if not k.startswith("layers/")}
    params["layers"] = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("layers/")}
    return params


def _np_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return name


# ---- GGUF (llama.cpp) ---------------------------------------------------------------------------------
# jaxkn leaf path -> (GGUF tensor name, transform). GGUF arrays read as numpy have torch's [out, in] layout;
# llama.cpp also permutes the rows of Q and K (its rope pairs adjacent dims, HF's rotates halves): undone here.
GGUF_NAMES: dict[str, tuple[str, str]] = {
    "embed": ("token_embd.weight", "none"),
    "final_norm": ("output_norm.weight", "none"),
    "lm_head": ("output.weight", "transpose"),
    "layers/attn_norm": ("blk.{i}.attn_norm.weight", "none"),
    "layers/wq": ("blk.{i}.attn_q.weight", "unpermute_q_transpose"),
    "layers/wk": ("blk.{i}.attn_k.weight", "unpermute_k_transpose"),
    "layers/wv": ("blk.{i}.attn_v.weight", "transpose"),
    "layers/wo": ("blk.{i}.attn_output.weight", "transpose"),
    "layers/mlp_norm": ("blk.{i}.ffn_norm.weight", "none"),
    "layers/w_gate": ("blk.{i}.ffn_gate.weight", "transpose"),
    "layers/w_up": ("blk.{i}.ffn_up.weight", "transpose"),
    "layers/w_down": ("blk.{i}.ffn_down.weight", "transpose"),
}
GGUF_IGNORED_SUFFIXES: tuple[str, ...] = ()
_GGUF_QKV_BIAS = {f"layers/b{x}": (f"blk.{{i}}.attn_{x}.bias", "none") for x in "qkv"}
_GGUF_QK_NORM = {f"layers/{x}_norm": (f"blk.{{i}}.attn_{x}_norm.weight", "none") for x in "qk"}
_GGUF_SANDWICH = {
    "layers/post_attn_norm": ("blk.{i}.post_attention_norm.weight", "none"),
    "layers/mlp_norm": ("blk.{i}.ffn_norm.weight", "none"),
    "layers/post_mlp_norm": ("blk.{i}.post_ffw_norm.weight", "none"),
}


def gguf_names(cfg: ModelConfig) -> dict[str, tuple[str, str]]:
    """The GGUF name map for `cfg`'s family.

    llama.cpp permutes Q/K rows only for its `llama` architecture (Qwen and Gemma keep HF's rotate-half
    order), and stores Gemma's norms as (1 + w): both are undone here.
    """
    names = dict(GGUF_NAMES)
    if cfg.model_type != "llama":
        names["layers/wq"], names["layers/wk"] = ("blk.{i}.attn_q.weight", "transpose"), (
            "blk.{i}.attn_k.weight", "transpose")
    norms = [leaf for leaf in (*names, *_GGUF_QK_NORM, *_GGUF_SANDWICH) if leaf.endswith("norm")]
    offset = {leaf: "minus_one" for leaf in norms} if cfg.norm_unit_offset else {}
    return _family_names(cfg, names, _GGUF_QKV_BIAS, _GGUF_QK_NORM, _GGUF_SANDWICH, offset)


def permute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's conversion of HF Q/K rows (rotate-half layout) to its interleaved layout (for tests)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of `permute_rope_rows`: GGUF Q/K rows back to HF's order (n_head = KV heads for K)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_transforms(cfg: ModelConfig) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The GGUF transforms: the HF ones plus the Q/K row un-permutation, which needs the head counts."""
    return {
        **TRANSFORMS,
        "unpermute_q_transpose": lambda a: unpermute_rope_rows(a, cfg.n_heads).T,
        "unpermute_k_transpose": lambda a: unpermute_rope_rows(a, cfg.n_kv_heads).T,
        "minus_one": lambda a: a - 1.0,  # llama.cpp's Gemma norms hold 1 + w; jaxkn stores HF's w
    }
