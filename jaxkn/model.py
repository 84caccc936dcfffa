"""The LLaMA-family decoder (LLaMA-2, LLaMA-3, Mistral, SmolLM2) as pure functions over a params pytree.

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

def rms_norm(x: Float[Array, "... D"], weight: Float[Array, D], eps: float) -> Float[Array, "... D"]:
    # Normalise in float32 and cast back before the weight, as HF's LlamaRMSNorm does (bit parity);
    # float64 inputs stay float64 (exactness proofs run under jax.enable_x64).
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight * normed.astype(x.dtype)


def rope_tables(cfg: ModelConfig, positions: Int[Array, "B T"]) -> tuple[Array, Array]:
    """cos and sin of RoPE angles, [B, T, E], in float32 (HF's rotate-half layout)."""
    inv_freq = jnp.asarray(rope_inverse_frequencies(cfg), dtype=jnp.float32)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, E/2]
    angles = jnp.concatenate([angles, angles], axis=-1)  # [B, T, E]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Float[Array, "B T N E"], cos: Array, sin: Array) -> Float[Array, "B T N E"]:
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def project_qkv(cfg: ModelConfig, lp: Params, x_normed: Float[Array, "B T D"], cos, sin):
    """Query, key and value heads with RoPE applied: q [B, T, H, E], k and v [B, T, K, E]."""
    b, t, _ = x_normed.shape
    q = (x_normed @ lp["wq"]).reshape(b, t, cfg.n_heads, cfg.head_dim)
    k = (x_normed @ lp["wk"]).reshape(b, t, cfg.n_kv_heads, cfg.head_dim)
    v = (x_normed @ lp["wv"]).reshape(b, t, cfg.n_kv_heads, cfg.head_dim)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def attention_mask(
    cfg: ModelConfig,
    q_positions: Int[Array, "B T"],
    kv_positions: Int[Array, "B S"],
    kv_valid: Bool[Array, "B S"],
) -> Bool[Array, "B T S"]:
    """Causal (by position), padding-aware, and windowed for Mistral (a query sees keys at distance < W)."""
    delta = q_positions[:, :, None] - kv_positions[:, None, :]
    allowed = (delta >= 0) & kv_valid[:, None, :]
    if cfg.sliding_window is not None:
        allowed &= delta < cfg.sliding_window
    return allowed


def attend(
    cfg: ModelConfig,
    q: Float[Array, "B T H E"],
    k: Float[Array, "B S K E"],
    v: Float[Array, "B S K E"],
    mask: Bool[Array, "B T S"],
) -> Float[Array, "B T H*E"]:
    b, t = q.shape[:2]
    q = q.reshape(b, t, cfg.n_kv_heads, cfg.q_per_kv, cfg.head_dim)
    scores = jnp.einsum("btkge,bske->bkgts", q, k) / np.sqrt(cfg.head_dim).astype(q.dtype)
    scores = jnp.where(mask[:, None, None], scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), _MASKED)
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
    """SwiGLU MLP with the neuron seam: edits rewrite the site tensors, captures return them (post-edit)."""
    if cfg.mlp_impl != "xla" and not capture:
        from jaxkn.kernels.dispatch import mlp_with_edits  # the Pallas swap-in for the hot path

        out = mlp_with_edits(cfg, lp, x_normed, edits)
        if out is not None:
            return out, {}
    captured = {}
    gate = x_normed @ lp["w_gate"]
    gate = apply_edits(gate, edits, "gate")
    captured["gate"] = gate
    act = jax.nn.silu(gate)
    act = apply_edits(act, edits, "act")
    captured["act"] = act
    product = act * (x_normed @ lp["w_up"])
    product = apply_edits(product, edits, "product")
    captured["product"] = product
    return product @ lp["w_down"], {site: captured[site] for site in capture}


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
):
    """One decoder block. Queries attend to `past_kv` (cached positions, first in S) and then to themselves.

    Returns (x_out, (k, v) of these tokens, captures).
    """
    h = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
    q, k, v = project_qkv(cfg, lp, h, cos, sin)
    keys, values = (k, v) if past_kv is None else (
        jnp.concatenate([past_kv[0], k], axis=1), jnp.concatenate([past_kv[1], v], axis=1))
    x = x + attend(cfg, q, keys, values, mask) @ lp["wo"]
    h = rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
    mlp_out, captured = mlp(cfg, lp, h, edits, capture)
    return x + mlp_out, (k, v), captured


def lm_head(cfg: ModelConfig, params: Params, h: Float[Array, "... D"]) -> Float[Array, "... V"]:
    h = rms_norm(h, params["final_norm"], cfg.rms_norm_eps)
    w = params["embed"].T if cfg.tie_embeddings else params["lm_head"]
    return h @ w


def embed(params: Params, tokens: Int[Array, "B T"]) -> Float[Array, "B T D"]:
    return jnp.take(params["embed"], tokens, axis=0)


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
        lp, layer_edits = layer
        x, kv, captured = block(cfg, lp, x, cos, sin, mask, None, layer_edits, capture)
        captured = {site: gather(a, capture_at) for site, a in captured.items()}
        return x, (captured, kv if return_kv else None)

    x = embed(params, tokens)
    x, (captures, kv) = jax.lax.scan(body, x, (params["layers"], edits))
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
        out.append((1.0 + 0.1 * noise if is_norm else scale * noise).astype(dtype))
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
    "lm_head", "embed", "default_positions", "layer_slice", "check_context",
]
