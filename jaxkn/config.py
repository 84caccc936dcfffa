"""Model configuration for LLaMA-style decoders: LLaMA-2/3, Mistral, SmolLM2, Qwen2/2.5, Qwen3, Gemma 2, Gemma 3.

One frozen, hashable dataclass, so it can be a static `jit` argument. It is read from an HF `config.json`
(`from_hf_dict`) or from GGUF metadata (`jaxkn.convert.gguf`). Every HF key is either handled, ignored on
purpose, or rejected: an unsupported option is an error naming the key, never a silent approximation.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")
GEMMA_TYPES = ("gemma2", "gemma3_text")
HIDDEN_ACTS = ("silu", "gelu_tanh")
LAYER_TYPES = ("full_attention", "sliding_attention")
SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
MLP_IMPLS = ("xla", "pallas", "pallas_interpret")


class UnsupportedConfigError(ValueError):
    """A checkpoint's configuration asks for something jaxkn does not implement."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """RoPE frequency scaling.

    Attributes:
      rope_type: "linear" (positions divided by `factor`) or "llama3" (LLaMA-3.1's band-wise rule).
      factor: the scaling factor.
      low_freq_factor: LLaMA-3 only.
      high_freq_factor: LLaMA-3 only.
      original_max_position_embeddings: LLaMA-3 only: the context length the model was trained at.
    """

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.rope_type not in ("linear", "llama3"):
            raise UnsupportedConfigError(
                f"rope_scaling type {self.rope_type!r} is not supported (supported: linear, llama3)"
            )
        if self.factor <= 0:
            raise UnsupportedConfigError(f"rope_scaling factor must be positive, got {self.factor}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and numerics of a LLaMA-family decoder.

    Attributes:
      model_type: one of SUPPORTED_MODEL_TYPES (as in HF `model_type`).
      vocab_size: V, rows of the token embedding.
      d_model: D, residual width (HF `hidden_size`).
      d_ff: F, MLP neurons per layer (HF `intermediate_size`): the knowledge-neuron axis.
      n_layers: L.
      n_heads: H, query heads.
      n_kv_heads: K, key/value heads (grouped-query attention when K < H).
      head_dim: per-head width.
      rms_norm_eps: epsilon inside RMSNorm.
      rope_theta: RoPE base.
      rope_scaling: optional RoPE frequency scaling (LLaMA-3 / linear).
      max_position_embeddings: the context length; longer inputs are rejected.
      sliding_window: the attention window (a query sees keys at distance < window), or None. It applies to
        every layer unless `layer_types` says which layers are windowed.
      layer_types: per layer "full_attention" or "sliding_attention" when the model mixes the two (Gemma 2/3,
        Qwen with `use_sliding_window`); None when every layer is alike.
      rope_local_theta: RoPE base of the sliding layers when it differs from `rope_theta` (Gemma 3's
        `rope_local_base_freq`); sliding layers never use `rope_scaling`. None: every layer uses `rope_theta`.
      hidden_act: the gate activation: "silu" (SwiGLU) or "gelu_tanh" (GeGLU with tanh-approximated GELU).
      qkv_bias: Q/K/V projections carry biases (Qwen2).
      qk_norm: per-head RMSNorm of queries and keys before RoPE (Qwen3, Gemma 3).
      norm_unit_offset: every RMSNorm scales by (1 + w), computed in float32 before the cast (Gemma).
      sandwich_norms: the attention and MLP outputs are normed again before the residual add (Gemma).
      scale_embeddings: token embeddings are multiplied by sqrt(d_model), in the embedding dtype (Gemma).
      query_pre_attn_scalar: attention scores are divided by sqrt of this instead of sqrt(head_dim) (Gemma).
      attn_softcap: attention logits pass through cap * tanh(logits / cap) before masking (Gemma 2), or None.
      final_softcap: output logits pass through cap * tanh(logits / cap) (Gemma 2), or None.
      tie_embeddings: the LM head reuses the token embedding.
      param_dtype: dtype of the stored params ("float32", "bfloat16", "float16").
      bos_token_id / eos_token_id / pad_token_id: special tokens (may be None).
      mlp_impl: which MLP implementation the forward pass uses ("xla", "pallas", "pallas_interpret").
    """

    model_type: str = "llama"
    vocab_size: int
    d_model: int
    d_ff: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 4096
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    rope_local_theta: float | None = None
    hidden_act: str = "silu"
    qkv_bias: bool = False
    qk_norm: bool = False
    norm_unit_offset: bool = False
    sandwich_norms: bool = False
    scale_embeddings: bool = False
    query_pre_attn_scalar: float | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    tie_embeddings: bool = False
    param_dtype: str = "float32"
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    mlp_impl: str = "xla"

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedConfigError(
                f"unsupported architecture model_type={self.model_type!r}; jaxkn supports {SUPPORTED_MODEL_TYPES}"
            )
        for name in ("vocab_size", "d_model", "d_ff", "n_layers", "n_heads", "n_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise UnsupportedConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise UnsupportedConfigError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.head_dim % 2:
            raise UnsupportedConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.param_dtype not in SUPPORTED_DTYPES:
            raise UnsupportedConfigError(f"param_dtype {self.param_dtype!r} not in {SUPPORTED_DTYPES}")
        if self.mlp_impl not in MLP_IMPLS:
            raise UnsupportedConfigError(f"mlp_impl {self.mlp_impl!r} not in {MLP_IMPLS}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise UnsupportedConfigError(f"sliding_window must be positive, got {self.sliding_window}")
        if self.hidden_act not in HIDDEN_ACTS:
            raise UnsupportedConfigError(f"hidden_act {self.hidden_act!r} not in {HIDDEN_ACTS}")
        if self.mlp_impl != "xla" and self.hidden_act != "silu":
            raise UnsupportedConfigError(f"mlp_impl={self.mlp_impl!r} (the Pallas SwiGLU kernel) cannot run the "
                                         f"{self.hidden_act} MLP of {self.model_type}; use mlp_impl='xla'")
        if self.layer_types is not None:
            if not isinstance(self.layer_types, tuple):  # keeps the config hashable (from_dict passes lists)
                object.__setattr__(self, "layer_types", tuple(self.layer_types))
            if len(self.layer_types) != self.n_layers or set(self.layer_types) - set(LAYER_TYPES):
                raise UnsupportedConfigError(f"layer_types must name {self.n_layers} layers, each one of "
                                             f"{LAYER_TYPES}; got {self.layer_types}")
            if "sliding_attention" in self.layer_types and self.sliding_window is None:
                raise UnsupportedConfigError("layer_types has sliding layers but sliding_window is None")
        for name in ("query_pre_attn_scalar", "attn_softcap", "final_softcap", "rope_local_theta"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise UnsupportedConfigError(f"{name} must be positive or None, got {getattr(self, name)}")

    @property
    def q_per_kv(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def mixed_layers(self) -> bool:
        """True when layers differ in attention window or RoPE base: every layer then picks its own kind."""
        return self.layer_types is not None and len(set(self.layer_types)) > 1

    def sliding_layers(self) -> tuple[bool, ...]:
        """Per layer: does it attend through `sliding_window`?"""
        if self.layer_types is None:
            return (self.sliding_window is not None,) * self.n_layers
        return tuple(t == "sliding_attention" for t in self.layer_types)

    @property
    def n_neurons(self) -> int:
        """L * F: every knowledge-neuron candidate."""
        return self.n_layers * self.d_ff

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ---- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        if d.get("rope_scaling") is not None:
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UnsupportedConfigError(f"unknown jaxkn config keys: {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ---- HF config.json ------------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any]) -> ModelConfig:
        """Reads an HF `config.json` dict of a supported family; rejects anything it cannot honour exactly."""
        hf = _text_config(hf)
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedConfigError(
                f"unsupported architecture model_type={model_type!r} "
                f"(architectures={hf.get('architectures')}); jaxkn supports {SUPPORTED_MODEL_TYPES}"
            )
        family_keys = _HF_FAMILY_HANDLED.get(model_type, set())
        unsupported = sorted(k for k in hf if k not in _HF_HANDLED | family_keys and k not in _HF_IGNORED)
        if unsupported:
            raise UnsupportedConfigError(f"unsupported HF config keys for {model_type}: {unsupported}")
        if model_type != "qwen2":  # Qwen2 hard-codes its Q/K/V biases; HF never reads attention_bias there
            _require_value(hf, "attention_bias", (False, None))
        _require_value(hf, "mlp_bias", (False, None))
        _require_value(hf, "pretraining_tp", (1, None))
        d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or d_model // n_heads
        if model_type in GEMMA_TYPES:
            family = _gemma_fields(hf, model_type)
        else:
            _require_value(hf, "hidden_act", ("silu",))
            family = _llama_qwen_fields(hf, model_type)
        dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
        return cls(
            model_type=model_type,
            vocab_size=hf["vocab_size"],
            d_model=d_model,
            d_ff=hf["intermediate_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            head_dim=head_dim,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            tie_embeddings=bool(hf.get("tie_word_embeddings", model_type in GEMMA_TYPES)),
            param_dtype=str(dtype).replace("torch.", ""),
            bos_token_id=_first_id(hf.get("bos_token_id")),
            eos_token_id=_first_id(hf.get("eos_token_id")),
            pad_token_id=_first_id(hf.get("pad_token_id")),
            **family,
        )


def _text_config(hf: dict[str, Any]) -> dict[str, Any]:
    """A multimodal Gemma 3 config (`model_type: gemma3`) read as its text model; other configs unchanged."""
    if hf.get("model_type") != "gemma3" or "text_config" not in hf:
        return hf
    extra = sorted(set(hf) - _GEMMA3_OUTER_KEYS - _HF_IGNORED)
    if extra:
        raise UnsupportedConfigError(f"unsupported HF config keys for gemma3: {extra}")
    text = dict(hf["text_config"] or {})
    text["model_type"] = "gemma3_text"
    for key in ("dtype", "torch_dtype", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"):
        if key in hf and key not in text:
            text[key] = hf[key]
    return text


def _llama_qwen_fields(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """Family-specific fields of LLaMA, Mistral, Qwen2 and Qwen3."""
    rope_theta, rope_scaling = _hf_rope(hf)
    fields = dict(rope_theta=rope_theta, rope_scaling=rope_scaling, qkv_bias=model_type == "qwen2",
                  qk_norm=model_type == "qwen3")
    if model_type == "llama":
        if hf.get("sliding_window"):
            raise UnsupportedConfigError("sliding_window on a llama config is not supported")
        return fields
    if model_type == "mistral":
        return dict(fields, sliding_window=hf.get("sliding_window"))
    # Qwen: the window exists only with use_sliding_window, on layers >= max_window_layers unless layer_types says
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    n = hf["num_hidden_layers"]
    default = ["sliding_attention" if window is not None and i >= hf.get("max_window_layers", 28)
               else "full_attention" for i in range(n)]
    types = hf.get("layer_types") or default
    if window is None:  # HF builds a plain causal mask for every layer then, whatever layer_types says
        types = ["full_attention"] * n
    return dict(fields, **_layer_plan(types, window))


def _gemma_fields(hf: dict[str, Any], model_type: str) -> dict[str, Any]:
    """Family-specific fields of Gemma 2 and Gemma 3 (text)."""
    act = hf.get("hidden_activation") or "gelu_pytorch_tanh"  # HF's Gemma MLP reads only hidden_activation
    if act not in ("gelu_pytorch_tanh",):
        raise UnsupportedConfigError(f"unsupported hidden_activation={act!r} (supported: ('gelu_pytorch_tanh',))")
    _require_value(hf, "use_bidirectional_attention", (False, None))
    n = hf["num_hidden_layers"]
    pattern = hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or (
        2 if model_type == "gemma2" else 6)
    default = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
    types = hf.get("layer_types") or default
    gemma2 = model_type == "gemma2"
    # Gemma 3's attention never applies attn_logit_softcapping (HF reads the key but does not pass it on).
    fields = dict(
        hidden_act="gelu_tanh", qk_norm=not gemma2, norm_unit_offset=True, sandwich_norms=True,
        scale_embeddings=True, query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        attn_softcap=_optional_float(hf.get("attn_logit_softcapping", 50.0)) if gemma2 else None,
        final_softcap=_optional_float(hf.get("final_logit_softcapping", 30.0 if gemma2 else None)),
    )
    if gemma2:
        theta, scaling = _hf_rope(hf)
        local_theta = None
    else:
        theta, scaling, local_theta = _gemma3_rope(hf)
    plan = _layer_plan(types, hf.get("sliding_window"))
    if plan["layer_types"] is None and plan["sliding_window"] is not None and local_theta is not None:
        theta, scaling, local_theta = local_theta, None, None  # every layer is local
    elif plan["layer_types"] is None:
        local_theta = None  # every layer is global
    if local_theta == theta and scaling is None:
        local_theta = None
    return dict(fields, rope_theta=theta, rope_scaling=scaling, rope_local_theta=local_theta, **plan)


def _gemma3_rope(hf: dict[str, Any]) -> tuple[float, RopeScaling | None, float]:
    """(global theta, global scaling, local theta): transformers 5 nests rope_parameters per layer type;
    transformers 4 configs hold rope_theta / rope_scaling (global) and rope_local_base_freq."""
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        extra = sorted(set(params) - set(LAYER_TYPES))
        if extra:
            raise UnsupportedConfigError(f"unsupported rope_parameters entries for gemma3_text: {extra}")
        full = dict(params.get("full_attention") or {})
        full.setdefault("rope_theta", 1_000_000.0)
        theta, scaling = _hf_rope({"rope_parameters": full, "rope_scaling": hf.get("rope_scaling")})
        local = dict(params.get("sliding_attention") or {})
        local.setdefault("rope_theta", hf.get("rope_local_base_freq", 10_000.0))
        local_theta, local_scaling = _hf_rope({"rope_parameters": local})
        if local_scaling is not None:
            raise UnsupportedConfigError("rope scaling on gemma3 sliding layers is not supported")
        return theta, scaling, local_theta
    theta, scaling = _hf_rope({**hf, "rope_theta": hf.get("rope_theta", 1_000_000.0)})
    return theta, scaling, float(hf.get("rope_local_base_freq", 10_000.0))


def _layer_plan(types: list[str], window: int | None) -> dict[str, Any]:
    """sliding_window and layer_types, normalised: layer_types only when layers differ."""
    types = tuple(types)
    if set(types) - set(LAYER_TYPES):
        raise UnsupportedConfigError(f"unsupported layer_types {sorted(set(types) - set(LAYER_TYPES))} "
                                     f"(supported: {LAYER_TYPES})")
    if "sliding_attention" not in types or window is None:
        return dict(sliding_window=None, layer_types=None)
    if "full_attention" not in types:
        return dict(sliding_window=int(window), layer_types=None)
    return dict(sliding_window=int(window), layer_types=types)


def _optional_float(v):
    return None if v is None else float(v)


_HF_HANDLED = {
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "rope_theta",
    "rope_scaling", "rope_parameters", "max_position_embeddings", "sliding_window", "tie_word_embeddings",
    "torch_dtype", "dtype", "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias", "mlp_bias",
    "pretraining_tp",
}
# Keys with no effect on the inference forward pass.
_HF_IGNORED = {
    "architectures", "initializer_range", "use_cache", "attention_dropout", "transformers_version",
    "_name_or_path", "auto_map", "output_attentions", "output_hidden_states", "return_dict",
    "is_encoder_decoder", "max_window_layers", "use_sliding_window", "quantization_config", "name_or_path",
    "chunk_size_feed_forward", "tokenizer_class", "prefix", "task_specific_params", "problem_type",
    "id2label", "label2id", "torchscript", "use_return_dict", "layer_types", "pad_token", "bos_token",
    "eos_token", "tie_encoder_decoder", "is_decoder", "add_cross_attention", "cross_attention_hidden_size",
    "finetuning_task", "tf_legacy_loss", "use_bfloat16", "embedding_multiplier", "output_scores",
    "cache_implementation",
}
# Keys a family reads beyond _HF_HANDLED (Qwen's window keys are in _HF_IGNORED for LLaMA/Mistral only in effect:
# the Qwen reader honours them).
_HF_FAMILY_HANDLED = {
    "gemma2": {"hidden_activation", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
               "use_bidirectional_attention", "sliding_window_pattern", "_sliding_window_pattern",
               "sliding_window_size"},  # an old Gemma 2 spelling HF never reads (sliding_window is the window)
}
_HF_FAMILY_HANDLED["gemma3_text"] = _HF_FAMILY_HANDLED["gemma2"] | {"rope_local_base_freq"}
# A multimodal Gemma 3 config around its `text_config`: the vision side is not read.
_GEMMA3_OUTER_KEYS = {
    "model_type", "text_config", "vision_config", "mm_tokens_per_image", "boi_token_index", "eoi_token_index",
    "image_token_index", "dtype", "torch_dtype", "tie_word_embeddings", "bos_token_id", "eos_token_id",
    "pad_token_id",
}


def _require_value(hf: dict, key: str, allowed: tuple) -> None:
    if key in hf and hf[key] not in allowed:
        raise UnsupportedConfigError(f"unsupported {key}={hf[key]!r} (supported: {allowed})")


def _first_id(v):
    if isinstance(v, list):
        return v[0] if v else None
    return v


def _hf_rope(hf: dict) -> tuple[float, RopeScaling | None]:
    """HF keeps rope settings in `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5)."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    kind = lambda d: d.get("rope_type") or d.get("type") or "default"  # noqa: E731
    if params and scaling and kind(params) != kind(scaling):
        raise UnsupportedConfigError(
            f"conflicting rope settings: rope_parameters says {kind(params)!r}, rope_scaling says {kind(scaling)!r}"
        )
    merged = {**scaling, **params}
    theta = merged.pop("rope_theta", None) or hf.get("rope_theta") or 10000.0
    rope_type = merged.pop("rope_type", None) or merged.pop("type", None) or "default"
    merged.pop("type", None)
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedConfigError(
            f"rope type {rope_type!r} is not supported (supported: {SUPPORTED_ROPE_TYPES})"
        )
    if rope_type == "default":
        rest = {k: v for k, v in merged.items() if k not in ("partial_rotary_factor",) and v is not None}
        if merged.get("partial_rotary_factor", 1.0) not in (1.0, None):
            raise UnsupportedConfigError("partial_rotary_factor != 1 is not supported")
        if rest and set(rest) - {"factor"}:
            raise UnsupportedConfigError(f"unsupported rope parameters for default rope: {sorted(rest)}")
        return float(theta), None
    attention_factor = merged.pop("attention_factor", None)
    if attention_factor not in (None, 1.0):
        raise UnsupportedConfigError(f"rope attention_factor={attention_factor} is not supported")
    allowed = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
    extra = sorted(set(merged) - allowed)
    if extra:
        raise UnsupportedConfigError(f"unsupported rope parameters for {rope_type}: {extra}")
    return float(theta), RopeScaling(rope_type=rope_type, **{k: merged[k] for k in merged})


def rope_inverse_frequencies(cfg: ModelConfig, local: bool = False):
    """Inverse frequencies of RoPE, after any scaling, as a numpy float64 array of shape [head_dim // 2].

    `local=True` gives the sliding layers' frequencies where they have their own base (`rope_local_theta`,
    never scaled, as Gemma 3's local layers).
    """
    import numpy as np

    local = local and cfg.rope_local_theta is not None
    theta = cfg.rope_local_theta if local else cfg.rope_theta
    inv = 1.0 / (theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim))
    rs = None if local else cfg.rope_scaling
    if rs is None:
        return inv
    if rs.rope_type == "linear":
        return inv / rs.factor
    # LLaMA-3: long wavelengths are divided by `factor`, short ones kept, the band between interpolated.
    old = rs.original_max_position_embeddings
    low_wavelen, high_wavelen = old / rs.low_freq_factor, old / rs.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / rs.factor, inv)
    smooth = (old / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
    smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled)
