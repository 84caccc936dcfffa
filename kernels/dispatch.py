"""The one point where the model reaches the Pallas MLP: `cfg.mlp_impl` picks the implementation.

`cfg.mlp_impl`:
- "xla" (default on every backend): the model's own `jnp` MLP; this module is not called.
- "pallas": the compiled kernel (Triton on GPU, Mosaic on TPU); on CPU a clear error says to use
  "pallas_interpret" or "xla".
- "pallas_interpret": the same kernel in Pallas interpret mode (any backend; slow, for tests).

Why "xla" is the default everywhere: the issue asks for the default per backend to be whichever measured
faster, and no GPU or TPU was available when the kernel was written, so nothing was measured there
(benchmarks/RESULTS.md, section "Pallas SwiGLU MLP", has the command that measures it). At attribution's row
counts (R = steps x prompts, 20..640) the MLP streams its weights, 3 * D * F values per layer, and h is at most
R * F values, so fusing h saves little traffic: the kernel has to earn its place on measurements, not on
principle. There is no "auto" setting for the same reason.

Which edits the kernel takes: every edit at site "product" with no shift (a pure rescaling). Their combined
factor s = prod over edits of (1 + where * (scale - 1)) is what the model's sequence of `apply_edit`s
multiplies the product by. Anything else (a shift, or the "gate"/"act" sites) returns None and the model
falls back to XLA, so results never depend on the implementation.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxkn.config import ModelConfig
from jaxkn.kernels.swiglu import swiglu_mlp
from jaxkn.site import SiteEdit

KERNEL_IMPLS = ("pallas", "pallas_interpret")


def combined_scale(edits: tuple[SiteEdit, ...], batch: int, tokens: int, d_ff: int):
    """The kernel's s [B*T, F] for this layer's edits, None when there are none, or False when an edit is not
    a pure rescaling of the product site (the kernel cannot take it)."""
    if any(edit.site != "product" or edit.shift is not None for edit in edits):
        return False
    s = None
    for edit in edits:
        factor = 1 + edit.where * (edit.scale - 1)  # [b, t, F]
        s = factor if s is None else s * factor
    if s is None:
        return None
    return jnp.broadcast_to(s, (batch, tokens, d_ff)).reshape(batch * tokens, d_ff)


def mlp_with_edits(
    cfg: ModelConfig,
    lp: dict,
    x_normed: Float[Array, "B T D"],
    edits: tuple[SiteEdit, ...] = (),
) -> Float[Array, "B T D"] | None:
    """The layer's MLP output through the Pallas kernel, or None when the edits need the XLA path.

    Args:
      cfg: model config; `cfg.mlp_impl` is "pallas" or "pallas_interpret".
      lp: one layer's params (w_gate [D, F], w_up [D, F], w_down [F, D]).
      x_normed: the MLP's input (after RMSNorm).
      edits: this layer's slices of the forward's `SiteEdit`s.
    """
    if cfg.mlp_impl not in KERNEL_IMPLS:
        raise ValueError(f"mlp_with_edits serves mlp_impl in {KERNEL_IMPLS}, got {cfg.mlp_impl!r}")
    batch, tokens, d_model = x_normed.shape
    s = combined_scale(tuple(edits), batch, tokens, cfg.d_ff)
    if s is False:
        return None
    y = swiglu_mlp(
        x_normed.reshape(batch * tokens, d_model),
        lp["w_gate"],
        lp["w_up"],
        lp["w_down"],
        s,
        interpret=cfg.mlp_impl == "pallas_interpret",
    )
    return y.reshape(batch, tokens, d_model)


__all__ = ["KERNEL_IMPLS", "combined_scale", "mlp_with_edits"]
