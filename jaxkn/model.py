"""LLaMA-style decoders (LLaMA-2/3, Mistral, SmolLM2, Qwen2/2.5, Qwen3, Gemma 2/3) as pure functions over params.

Axis glossary (used in every jaxkn module):
  B batch (prompts)      T tokens (query positions)   S key/value positions   D model width (d_model)
  F neurons (d_ff)       L layers                     V vocabulary            H query heads
  K key/value heads      G query heads per kv head    E head width            M integration steps
  P gathered positions (where logits or activations are read)

Params layout (a nested dict of arrays; per-layer weights stacked on a leading L axis so a `lax.scan` covers
the blocks and compile time does not grow with depth):

  embed       [V, D]
  layers/attn_norm [L, D]   layers/wq [L, D, H*E]   layers/wk [L, D, K*E]   layers/wv [L, D, K*E]
  layers/wo   [L, H*E, D]   layers/mlp_norm [L, D]
  layers/w_gate [L, D, F]   layers/w_up [L, D, F]   layers/w_down [L, F, D]
  final_norm  [D]
  lm_head     [D, V]        (absent when embeddings are tied)
  and, by family: layers/bq [L, H*E], layers/bk, layers/bv [L, K*E] (Qwen2 Q/K/V biases);
  layers/q_norm, layers/k_norm [L, E] (Qwen3, Gemma 3 per-head norms); layers/post_attn_norm,
  layers/post_mlp_norm [L, D] (Gemma's sandwich norms; its `mlp_norm` is HF's pre_feedforward_layernorm).

Norm weights are stored as the checkpoint holds them: Gemma's (1 + w) is applied in the forward, in float32,
so bfloat16 params keep w's precision.

Layer kinds: when a model mixes sliding-window and global layers (`cfg.mixed_layers`: Gemma 2/3, windowed
Qwen), `rope_tables` and `attention_mask` return both kinds stacked on a leading axis (0 global, 1 sliding) and
`block` picks its layer's own from `layer=` (the layer index; `layer_kinds(cfg)` gives every layer's kind).

Weights are stored as `x @ W` (input axis first), i.e. transposed relative to torch's `nn.Linear`.

Padding: every row carries `valid` (a real token) and `positions` (its RoPE position). Right- and left-padded
batches both work; a row's results do not depend on what else is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jaxkn.config import ModelConfig, rope_inverse_frequencies
from jaxkn.site import SITES, SiteEdit, apply_edits, as_tuple
from jaxkn.validation import check_token_ids

Params = dict
# Finite, so a fully masked (padding) row softmaxes to uniform instead of NaN.
_MASKED = -1e30


class ContextLengthError(ValueError):
    """An input is longer than the model's context."""


# ---- building blocks ----------------------------------------------------------------------------------

def rms_norm(x: Float[Array, "... D"], weight: Float[Array, D], eps: float,
             unit_offset: bool = False) -> Float[Array, "... D"]:
    # Normalise in float32 and cast back before the weight, as HF's LlamaRMSNorm does (bit parity);
    # float64 inputs stay float64 (exactness proofs run under jax.enable_x64).
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    if unit_offset:  # Gemma: scale by (1 + w) in float32, cast after (HF's GemmaRMSNorm order)
        return (normed * (1.0 + weight.astype(normed.dtype))).astype(x.dtype)
    return weight * normed.astype(x.dtype)


def norm(cfg: ModelConfig, x: Array, weight: Array) -> Array:
    """The family's RMSNorm (plain or Gemma's 1 + w) with the config's epsilon, over the last axis (D or E)."""
    return rms_norm(x, weight, cfg.rms_norm_eps, cfg.norm_unit_offset)


def soft_cap(x: Array, cap: float | None) -> Array:
    """cap * tanh(x / cap) (Gemma 2's logit soft-capping); the identity when cap is None."""
    return x if cap is None else cap * jnp.tanh(x / cap)


def layer_kinds(cfg: ModelConfig) -> np.ndarray:
    """Per layer: 1 for a sliding-window layer, 0 for a global one ([L] int32; all 0 for a uniform model)."""
    return np.asarray(cfg.sliding_layers(), np.int32) if cfg.mixed_layers else np.zeros(cfg.n_layers, np.int32)


def layer_view(cfg: ModelConfig, layer, cos, sin, mask):
    """A layer's own rope tables and mask from the stacked kinds of a mixed model (unchanged otherwise)."""
    if not cfg.mixed_layers:
        return cos, sin, mask
    if layer is None:
        raise ValueError(f"{cfg.model_type} mixes sliding-window and global layers: pass block(..., layer=i) "
                         f"(the layer index, e.g. from the scan) so each layer uses its own mask and RoPE")
    kind = jnp.asarray(layer_kinds(cfg))[layer]
    return cos[kind], sin[kind], mask[kind]


def rope_tables(cfg: ModelConfig, positions: Int[Array, "B T"]) -> tuple[Array, Array]:
    """cos and sin of RoPE angles, [B, T, E], in float32 (HF's rotate-half layout).

    For a mixed model both kinds are stacked: [2, B, T, E] (global, sliding; see the module docstring).
    """
    def tables(local: bool):
        inv_freq = jnp.asarray(rope_inverse_frequencies(cfg, local=local), dtype=jnp.float32)
        angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, E/2]
        angles = jnp.concatenate([angles, angles], axis=-1)  # [B, T, E]
        return jnp.cos(angles), jnp.sin(angles)

    if not cfg.mixed_layers:
        return tables(False)
    (cos_g, sin_g), (cos_l, sin_l) = tables(False), tables(True)
    return jnp.stack([cos_g, cos_l]), jnp.stack([sin_g, sin_l])


def apply_rope(x: Float[Array, "B T N E"], cos: Array, sin: Array) -> Float[Array, "B T N E"]:
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def project_qkv(cfg: ModelConfig, lp: Params, x_normed: Float[Array, "B T D"], cos, sin):
    """Query, key and value heads with RoPE applied: q [B, T, H, E], k and v [B, T, K, E].

    Qwen2 adds its Q/K/V biases; Qwen3 and Gemma 3 norm each query and key head before RoPE.
    """
    b, t, _ = x_normed.shape
    q, k, v = x_normed @ lp["wq"], x_normed @ lp["wk"], x_normed @ lp["wv"]
    if cfg.qkv_bias:
        q, k, v = q + lp["bq"], k + lp["bk"], v + lp["bv"]
    q = q.reshape(b, t, cfg.n_heads, cfg.head_dim)
    k = k.reshape(b, t, cfg.n_kv_heads, cfg.head_dim)
    v = v.reshape(b, t, cfg.n_kv_heads, cfg.head_dim)
    if cfg.qk_norm:
        q, k = norm(cfg, q, lp["q_norm"]), norm(cfg, k, lp["k_norm"])
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def attention_mask(
    cfg: ModelConfig,
    q_positions: Int[Array, "B T"],
    kv_positions: Int[Array, "B S"],
    kv_valid: Bool[Array, "B S"],
) -> Bool[Array, "B T S"]:
    """Causal (by position), padding-aware, and windowed (a query sees keys at distance < W).

    Uniform models get one mask [B, T, S], windowed when `sliding_window` is set (Mistral). Mixed models get
    [2, B, T, S]: the global mask, then the windowed one.
    """
    delta = q_positions[:, :, None] - kv_positions[:, None, :]
    allowed = (delta >= 0) & kv_valid[:, None, :]
    if cfg.sliding_window is None:
        return allowed
    windowed = allowed & (delta < cfg.sliding_window)
    return jnp.stack([allowed, windowed]) if cfg.mixed_layers else windowed


def attention_scores(cfg: ModelConfig, raw: Array) -> Array:
    """Raw q.k products -> attention logits in (at least) float32: scaled by 1/sqrt(query_pre_attn_scalar or
    head_dim), then soft-capped (Gemma 2). Masking and softmax follow."""
    scalar = cfg.query_pre_attn_scalar or cfg.head_dim
    scores = (raw / np.sqrt(scalar).astype(raw.dtype)).astype(jnp.promote_types(raw.dtype, jnp.float32))
    return soft_cap(scores, cfg.attn_softcap)


def attend(
    cfg: ModelConfig,
    q: Float[Array, "B T H E"],
    k: Float[Array, "B S K E"],
    v: Float[Array, "B S K E"],
    mask: Bool[Array, "B T S"],
) -> Float[Array, "B T H*E"]:
    b, t = q.shape[:2]
    q = q.reshape(b, t, cfg.n_kv_heads, cfg.q_per_kv, cfg.head_dim)
    scores = attention_scores(cfg, jnp.einsum("btkge,bske->bkgts", q, k))
    scores = jnp.where(mask[:, None, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bske->btkge", probs, v)
    return out.reshape(b, t, cfg.n_heads * cfg.head_dim)


def mlp(
    cfg: ModelConfig,
    lp: Params,
    x_normed: Float[Array, "B T D"],
    edits: tuple[SiteEdit, ...] = (),
    capture: Sequence[str] = (),
) -> tuple[Float[Array, "B T D"], dict[str, Float[Array, "B T F"]]]:
    """SwiGLU (or Gemma's GeGLU) MLP with the neuron seam: edits rewrite the site tensors, captures return them
    (post-edit). `product` is what `down` reads: act(gate) * up."""
    if cfg.mlp_impl != "xla" and not capture:
        from jaxkn.kernels.dispatch import mlp_with_edits  # the Pallas swap-in for the hot path

        out = mlp_with_edits(cfg, lp, x_normed, edits)
        if out is not None:
            return out, {}
    captured = {}
    gate = x_normed @ lp["w_gate"]
    gate = apply_edits(gate, edits, "gate")
    captured["gate"] = gate
    act = jax.nn.silu(gate) if cfg.hidden_act == "silu" else jax.nn.gelu(gate, approximate=True)
    act = apply_edits(act, edits, "act")
    captured["act"] = act
    product = act * (x_normed @ lp["w_up"])
    product = apply_edits(product, edits, "product")
    captured["product"] = product
    return product @ lp["w_down"], {site: captured[site] for site in capture}


def attention_residual(cfg: ModelConfig, lp: Params, x: Float[Array, "B T D"],
                       attn: Float[Array, "B T H*E"]) -> Float[Array, "B T D"]:
    """The residual after attention: output projection, Gemma's post-attention norm, add."""
    out = attn @ lp["wo"]
    return x + (norm(cfg, out, lp["post_attn_norm"]) if cfg.sandwich_norms else out)


def mlp_residual(cfg: ModelConfig, lp: Params, x: Float[Array, "B T D"], edits: tuple[SiteEdit, ...] = (),
                 capture: Sequence[str] = ()) -> tuple[Float[Array, "B T D"], dict[str, Array]]:
    """The residual after the MLP: pre-MLP norm, the MLP (with the neuron seam), Gemma's post-MLP norm, add."""
    out, captured = mlp(cfg, lp, norm(cfg, x, lp["mlp_norm"]), edits, capture)
    return x + (norm(cfg, out, lp["post_mlp_norm"]) if cfg.sandwich_norms else out), captured


def block(
    cfg: ModelConfig,
    lp: Params,
    x: Float[Array, "B T D"],
    cos,
    sin,
    mask: Bool[Array, "B T S"],
    past_kv: tuple[Array, Array] | None = None,
    edits: tuple[SiteEdit, ...] = (),
    capture: Sequence[str] = (),
    layer: Int[Array, ""] | int | None = None,
):
    """One decoder block. Queries attend to `past_kv` (cached positions, first in S) and then to themselves.

    `layer` (the layer index) is needed only by mixed models, to pick the layer's kind from stacked rope tables
    and masks. Returns (x_out, (k, v) of these tokens, captures).
    """
    cos, sin, mask = layer_view(cfg, layer, cos, sin, mask)
    q, k, v = project_qkv(cfg, lp, norm(cfg, x, lp["attn_norm"]), cos, sin)
    keys, values = (k, v) if past_kv is None else (
        jnp.concatenate([past_kv[0], k], axis=1), jnp.concatenate([past_kv[1], v], axis=1))
    x = attention_residual(cfg, lp, x, attend(cfg, q, keys, values, mask))
    x, captured = mlp_residual(cfg, lp, x, edits, capture)
    return x, (k, v), captured


def lm_head(cfg: ModelConfig, params: Params, h: Float[Array, "... D"]) -> Float[Array, "... V"]:
    h = norm(cfg, h, params["final_norm"])
    w = params["embed"].T if cfg.tie_embeddings else params["lm_head"]
    return soft_cap(h @ w, cfg.final_softcap)


def embed(params: Params, tokens: Int[Array, "B T"], cfg: ModelConfig | None = None) -> Float[Array, "B T D"]:
    """Token embeddings; Gemma scales them by sqrt(D) rounded to the embedding dtype, as HF does (pass `cfg`)."""
    x = jnp.take(params["embed"], tokens, axis=0)
    if cfg is not None and cfg.scale_embeddings:
        x = x * jnp.asarray(np.sqrt(cfg.d_model), x.dtype)
    return x


# ---- the forward pass ---------------------------------------------------------------------------------

class ForwardOutput(NamedTuple):
    """logits: [B, P, V] at `logits_at` (or [B, T, V]); captures: site -> [L, B, P, F]; kv: (k, v) [L, B, T, K, E]."""

    logits: Float[Array, "B P V"] | None
    captures: dict[str, Float[Array, "L B P F"]]
    kv: tuple[Array, Array] | None


def default_positions(valid: Bool[Array, "B T"]) -> Int[Array, "B T"]:
    """RoPE positions that count only real tokens: right- and left-padding give the same positions."""
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)


def check_context(cfg: ModelConfig, length: int) -> None:
    if length > cfg.max_position_embeddings:
        raise ContextLengthError(
            f"input of {length} tokens is longer than the model's context "
            f"({cfg.max_position_embeddings} tokens, max_position_embeddings)"
        )


def forward(
    params: Params,
    tokens: Int[Array, "B T"],
    cfg: ModelConfig,
    *,
    valid: Bool[Array, "B T"] | None = None,
    positions: Int[Array, "B T"] | None = None,
    edits: SiteEdit | Sequence[SiteEdit] | None = None,
    capture: Sequence[str] = (),
    capture_at: Int[Array, "B P"] | None = None,
    logits_at: Int[Array, "B P"] | None = None,
    return_logits: bool = True,
    return_kv: bool = False,
) -> ForwardOutput:
    """Runs the decoder over a batch of token rows.

    Args:
      params: the params pytree (layout in the module docstring).
      tokens: token ids; padding positions hold any valid id.
      cfg: the model config (static).
      valid: True for real tokens (default: all).
      positions: RoPE positions (default: count of real tokens before each one).
      edits: `SiteEdit`s applied at the neuron site, in order (default: none, at zero cost).
      capture: sites to return ("product", "gate", "act"), after the edits.
      capture_at: token indices at which to gather captures (default: all positions).
      logits_at: token indices at which to compute logits (default: all); logits elsewhere are never built.
      return_logits: set False when only captures are wanted.
      return_kv: also return every layer's keys/values (to seed a KV cache).
    """
    check_token_ids(tokens, cfg.vocab_size, where="forward")  # concrete inputs only; tracers pass
    tokens = jnp.asarray(tokens)
    check_context(cfg, tokens.shape[1])
    for site in capture:
        if site not in SITES:
            raise ValueError(f"unknown capture site {site!r}; choose from {SITES}")
    valid = jnp.ones(tokens.shape, bool) if valid is None else jnp.asarray(valid, bool)
    positions = default_positions(valid) if positions is None else jnp.asarray(positions)
    edits = as_tuple(edits)
    cos, sin = rope_tables(cfg, positions)
    mask = attention_mask(cfg, positions, positions, valid)

    def gather(x, at):  # [B, T, ...] -> [B, P, ...]
        return x if at is None else jnp.take_along_axis(x, at.reshape(*at.shape, *([1] * (x.ndim - 2))), 1)

    def body(x, layer):
        lp, layer_edits, index = layer
        x, kv, captured = block(cfg, lp, x, cos, sin, mask, None, layer_edits, capture, layer=index)
        captured = {site: gather(a, capture_at) for site, a in captured.items()}
        return x, (captured, kv if return_kv else None)

    x = embed(params, tokens, cfg)
    x, (captures, kv) = jax.lax.scan(body, x, (params["layers"], edits, jnp.arange(cfg.n_layers)))
    logits = lm_head(cfg, params, gather(x, logits_at)) if return_logits else None
    return ForwardOutput(logits=logits, captures=captures, kv=kv)


def init_params(cfg: ModelConfig, key: jax.Array, scale: float = 0.02) -> Params:
    """Random params of the right shapes (for tests and benchmarks; real weights come from `jaxkn.convert`)."""
    dtype = jnp.dtype(cfg.param_dtype)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(
        param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple))
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, (path, shape) in zip(keys, leaves):
        noise = jax.random.normal(k, shape, jnp.float32)
        is_norm = str(getattr(path[-1], "key", "")).endswith("norm")
        norm_centre = 0.0 if cfg.norm_unit_offset else 1.0  # Gemma's norms store w of (1 + w)
        out.append((norm_centre + 0.1 * noise if is_norm else scale * noise).astype(dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def param_shapes(cfg: ModelConfig) -> dict:
    """The params pytree with shape tuples as leaves (the converter's postcondition checks against it)."""
    L, D, F, V, E = cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.head_dim
    shapes = {
        "embed": (V, D),
        "layers": {
            "attn_norm": (L, D),
            "wq": (L, D, cfg.n_heads * E),
            "wk": (L, D, cfg.n_kv_heads * E),
            "wv": (L, D, cfg.n_kv_heads * E),
            "wo": (L, cfg.n_heads * E, D),
            "mlp_norm": (L, D),
            "w_gate": (L, D, F),
            "w_up": (L, D, F),
            "w_down": (L, F, D),
        },
        "final_norm": (D,),
    }
    layers = shapes["layers"]
    if cfg.qkv_bias:
        layers.update(bq=(L, cfg.n_heads * E), bk=(L, cfg.n_kv_heads * E), bv=(L, cfg.n_kv_heads * E))
    if cfg.qk_norm:
        layers.update(q_norm=(L, E), k_norm=(L, E))
    if cfg.sandwich_norms:
        layers.update(post_attn_norm=(L, D), post_mlp_norm=(L, D))
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (D, V)
    return shapes


def summarize(params: Params) -> str:
    """One line per leaf: path, shape, dtype."""
    lines = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        lines.append(f"{name:24s} {str(tuple(leaf.shape)):22s} {leaf.dtype}")
    return "\n".join(lines)


def layer_slice(params: Params, layer: int) -> Params:
    """The params of one layer (no L axis)."""
    return jax.tree_util.tree_map(lambda a: a[layer], params["layers"])


__all__ = [
    "ContextLengthError", "ForwardOutput", "forward", "init_params", "param_shapes", "summarize",
    "rms_norm", "rope_tables", "apply_rope", "project_qkv", "attention_mask", "attend", "mlp", "block",
    "lm_head", "embed", "default_positions", "layer_slice", "check_context", "norm", "soft_cap", "layer_kinds",
    "layer_view", "attention_scores", "attention_residual", "mlp_residual",
]
