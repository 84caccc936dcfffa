"""Model configuration for the LLaMA family (LLaMA-2, LLaMA-3, Mistral, SmolLM2).

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

SUPPORTED_MODEL_TYPES = ("llama", "mistral")
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
      model_type: "llama" or "mistral" (as in HF `model_type`).
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
      sliding_window: Mistral's attention window (a query sees keys at distance < window), or None.
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

    @property
    def q_per_kv(self) -> int:
        return self.n_heads // self.n_kv_heads

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
        """Reads an HF LLaMA/Mistral `config.json` dict; rejects anything it cannot honour exactly."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedConfigError(
                f"unsupported architecture model_type={model_type!r} "
                f"(architectures={hf.get('architectures')}); jaxkn supports {SUPPORTED_MODEL_TYPES}"
            )
        unsupported = sorted(k for k in hf if k not in _HF_HANDLED and k not in _HF_IGNORED)
        if unsupported:
            raise UnsupportedConfigError(f"unsupported HF config keys for {model_type}: {unsupported}")
        _require_value(hf, "hidden_act", ("silu",))
        _require_value(hf, "attention_bias", (False, None))
        _require_value(hf, "mlp_bias", (False, None))
        _require_value(hf, "pretraining_tp", (1, None))
        d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or d_model // n_heads
        rope_theta, rope_scaling = _hf_rope(hf)
        window = hf.get("sliding_window") if model_type == "mistral" else None
        if model_type == "llama" and hf.get("sliding_window"):
            raise UnsupportedConfigError("sliding_window on a llama config is not supported")
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
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            sliding_window=window,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            param_dtype=str(dtype).replace("torch.", ""),
            bos_token_id=_first_id(hf.get("bos_token_id")),
            eos_token_id=_first_id(hf.get("eos_token_id")),
            pad_token_id=_first_id(hf.get("pad_token_id")),
        )


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


def rope_inverse_frequencies(cfg: ModelConfig):
    """Inverse frequencies of RoPE, after any scaling, as a numpy float64 array of shape [head_dim // 2]."""
    import numpy as np

    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim))
    rs = cfg.rope_scaling
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
