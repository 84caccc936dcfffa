"""Counted FLOPs of one fact's attribution: the fast schedule's floor and the PyTorch baseline's work.

A fact is one prompt of T tokens with a one-token answer, attributed at all L layers with m integration
points (METHOD.md §3). FLOPs are 2 per multiply-add of the matrix products; norms, rope, softmax and
elementwise work are left out (a few per cent at these shapes).

Per token and layer, the forward pass costs
    2 D (H E + 2 K E)  (q, k, v)  +  2 H E D  (o)  +  6 D F  (gate, up, down)  +  4 H E S  (scores and values
    against S keys: S = position + 1, at most the sliding window);
the LM head costs 2 D V per position whose logits are built.

Backward: only input gradients are needed (attribution never asks for weight gradients), so a weight
product's backward costs what its forward costs (dX = dY W^T), and attention's two products, whose operands are
both activations, cost twice their forward (dQ, dK from the scores; dP, dV from the values). Hence
forward + backward = 2x the forward for weight products and 3x for attention: METHOD.md §8's counting. The
usual training convention (3x forward, weight gradients included) is available as `backward_factor=2`.

- `fast_floor`: METHOD.md §8's static schedule, the fewest operations the algorithm needs: one prefix forward of
  the T tokens through all layers (logits only at the predicting position), then per (layer l, point k) one row
  at the predicting position that starts at layer l's down projection (its activation is injected), runs
  layers l+1..L-1 and the head forward, and back again to the injected activation.
- `baseline_work`: what the EleutherAI-style loop computes: per layer l, m scaled copies of the whole prompt
  forward through all L layers and the head at every position (transformers builds all T logits), and backward
  from the head down to layer l's injected activation, dense over all T positions (autograd does not know
  that only the last position changes); plus the one plain forward of the prompt that captures the observed
  activations (`benchmarks/torch_baseline.py`).
"""

from __future__ import annotations

import dataclasses

from jaxkn.config import ModelConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlopCount:
    """FLOPs of one fact, split by where they go (forward and backward together)."""

    prefix: float
    rows: float
    total: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def weight_flops_per_token(cfg: ModelConfig) -> float:
    """Forward FLOPs of one token through one layer's weight products (attention scores excluded)."""
    d, e = cfg.d_model, cfg.head_dim
    qkv = 2 * d * (cfg.n_heads * e + 2 * cfg.n_kv_heads * e)
    out = 2 * cfg.n_heads * e * d
    return qkv + out + 6 * d * cfg.d_ff


def attention_flops(cfg: ModelConfig, n_keys: int) -> float:
    """Forward FLOPs of one query token's scores and weighted values against `n_keys` keys."""
    if cfg.sliding_window is not None:
        n_keys = min(n_keys, cfg.sliding_window)
    return 4 * cfg.n_heads * cfg.head_dim * n_keys


def head_flops(cfg: ModelConfig) -> float:
    """Forward FLOPs of the LM head for one position."""
    return 2 * cfg.d_model * cfg.vocab_size


def prompt_forward_flops(cfg: ModelConfig, prompt_len: int, n_layers: int | None = None) -> float:
    """Forward FLOPs of a whole causal prompt through `n_layers` layers (default all), no head."""
    n_layers = cfg.n_layers if n_layers is None else n_layers
    per_layer = prompt_len * weight_flops_per_token(cfg) + sum(
        attention_flops(cfg, p + 1) for p in range(prompt_len))
    return n_layers * per_layer


def _fwd_bwd(weights: float, attention: float, backward_factor: float) -> float:
    """Forward plus input-gradient backward: weight products x(1 + f), attention x(1 + 2 f)."""
    return weights * (1 + backward_factor) + attention * (1 + 2 * backward_factor)


def fast_floor(cfg: ModelConfig, prompt_len: int, steps: int, backward_factor: float = 1.0) -> FlopCount:
    """The fewest FLOPs of one fact on METHOD.md §8's schedule (see the module docstring)."""
    n_keys = prompt_len  # the predicting position sees the whole prompt
    prefix = prompt_forward_flops(cfg, prompt_len) + head_flops(cfg)
    down = 2 * cfg.d_ff * cfg.d_model
    rows = 0.0
    for layer in range(cfg.n_layers):
        above = cfg.n_layers - 1 - layer
        weights = down + above * weight_flops_per_token(cfg) + head_flops(cfg)
        rows += steps * _fwd_bwd(weights, above * attention_flops(cfg, n_keys), backward_factor)
    return FlopCount(prefix=prefix, rows=rows, total=prefix + rows)


def baseline_work(cfg: ModelConfig, prompt_len: int, steps: int, backward_factor: float = 1.0) -> FlopCount:
    """FLOPs of the EleutherAI-style loop for one fact (see the module docstring)."""
    t = prompt_len
    attn_per_layer = sum(attention_flops(cfg, p + 1) for p in range(t))
    weights_per_layer = t * weight_flops_per_token(cfg)
    head_all = t * head_flops(cfg)
    capture = prompt_forward_flops(cfg, t) + head_all  # the plain forward that captures the activations
    rows = 0.0
    down_all = t * 2 * cfg.d_ff * cfg.d_model
    for layer in range(cfg.n_layers):
        above = cfg.n_layers - 1 - layer
        forward = cfg.n_layers * (weights_per_layer + attn_per_layer) + head_all
        backward = backward_factor * (head_all + down_all + above * (weights_per_layer + 2 * attn_per_layer))
        rows += steps * (forward + backward)
    return FlopCount(prefix=capture, rows=rows, total=capture + rows)


def arithmetic_ratio(cfg: ModelConfig, prompt_len: int, steps: int) -> float:
    """Baseline work / fast floor: the speed-up the arithmetic alone allows (not a measurement)."""
    return baseline_work(cfg, prompt_len, steps).total / fast_floor(cfg, prompt_len, steps).total


__all__ = [
    "FlopCount", "weight_flops_per_token", "attention_flops", "head_flops", "prompt_forward_flops",
    "fast_floor", "baseline_work", "arithmetic_ratio",
]
