"""Pallas kernels, sealed beside their `jnp` references and reached through one dispatch point.

- `swiglu`: the fused SwiGLU MLP with per-row, per-neuron scaling (the attribution hot path) and its
  `custom_vjp`; `swiglu_reference` is the same function in plain `jnp`.
- `blocks`: tile sizes chosen from the shapes, per backend, overridable.
- `dispatch`: `mlp_with_edits`, what `jaxkn.model.mlp` calls when `cfg.mlp_impl` is "pallas" or
  "pallas_interpret".
"""

from jaxkn.kernels.blocks import SwigluBlocks, choose_blocks
from jaxkn.kernels.dispatch import mlp_with_edits
from jaxkn.kernels.swiglu import swiglu_mlp, swiglu_reference

__all__ = ["SwigluBlocks", "choose_blocks", "mlp_with_edits", "swiglu_mlp", "swiglu_reference"]
