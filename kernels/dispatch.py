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

Which edits the kernel takes: every edit at site "product", rescaling and shift alike: in order they map the
product h to h * s + c (`combined_terms`), which the kernel computes per row and neuron; with no edits both are
None and nothing is materialised. The attribution engine's edits (scale t, shift (1 - t) b + probe) are of
this form. Edits at the "gate" or "act" sites return None and the model falls back to XLA, so results never
depend on the implementation.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxkn.config import ModelConfig
from jaxkn.kernels.swiglu import swiglu_mlp
from jaxkn.site import SiteEdit

KERNEL_IMPLS = ("pallas", "pallas_interpret")


def combined_terms(edits: tuple[SiteEdit, ...], batch: int, tokens: int, d_ff: int):
    """The kernel's (s, c), each [B*T, F] or None, for this layer's edits; None when an edit is not at the
    "product" site (the kernel cannot take it).

    Edit k maps h to h * f_k + w_k * shift_k with f_k = 1 + w_k (scale_k - 1), w_k its `where`; in order, they
    give h * s + c with s = prod f_k and c folded the same way (c <- c * f_k + w_k * shift_k).
    """
    if any(edit.site != "product" for edit in edits):
        return None
    s = c = None
    for edit in edits:
        factor = 1 + edit.where * (edit.scale - 1)  # [b, t, F]
        s = factor if s is None else s * factor
        c = None if c is None else c * factor
        if edit.shift is not None:
            added = edit.where * edit.shift
            c = added if c is None else c + added
    flat = lambda a: None if a is None else jnp.broadcast_to(a, (batch, tokens, d_ff)).reshape(-1, d_ff)  # noqa: E731
    return flat(s), flat(c)


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
    terms = combined_terms(tuple(edits), batch, tokens, cfg.d_ff)
    if terms is None:
        return None
    y = swiglu_mlp(
        x_normed.reshape(batch * tokens, d_model),
        lp["w_gate"],
        lp["w_up"],
        lp["w_down"],
        *terms,
        interpret=cfg.mlp_impl == "pallas_interpret",
    )
    return y.reshape(batch, tokens, d_model)


__all__ = ["KERNEL_IMPLS", "combined_terms", "mlp_with_edits"]
