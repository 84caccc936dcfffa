"""The neuron site: the one seam where the model lets analysis touch its MLP.

A LLaMA MLP computes `down(silu(gate(x)) * up(x))`. A knowledge neuron (l, i) is coordinate i of one of the
intermediate vectors of layer l at one token position (METHOD.md §2):

- "product": a = silu(gate(x)) * up(x), the vector `down` reads (default; TransformerLens `hook_post`);
- "gate":    the gate pre-activation gate(x) (EasyEdit's LLaMA site);
- "act":     silu(gate(x)) (pyvene's MLP activation).

A `SiteEdit` is a value, not a hook: an affine rewrite of the site,

    h' = h + where * ((scale - 1) * h + shift)

with every leaf carrying a leading layer axis, so the model's layer scan hands each layer its own slice. Leaves
broadcast against the per-layer site tensor [B, T, F]: `scale` and `shift` are [L, b, t, F] and `where` is
[L, b, t, 1] with b in {1, B} and t in {1, T}. A scale of 1 with shift 0 is the identity; the model skips the
whole computation when no edit is given (the default), so the no-op costs nothing.

Edits compose: the model applies a tuple of edits in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

SITES = ("product", "gate", "act")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SiteEdit:
    """An affine rewrite of one MLP site, for every layer (leading axis L).

    Attributes:
      scale: multiplicative factor, [L, b, t, F] (1 = untouched).
      shift: additive term, broadcastable to [L, b, t, F], or None for a pure rescaling (the Pallas MLP
        accepts only those; None is decided at trace time, a zero array is not).
      where: 1.0 where the rewrite applies, 0.0 elsewhere, [L, b, t, 1].
      site: which intermediate vector is rewritten ("product", "gate" or "act"); static.
    """

    scale: Float[Array, "L b t F"]
    shift: Float[Array, "L b t F"] | None
    where: Float[Array, "L b t 1"]
    site: str = dataclasses.field(default="product", metadata=dict(static=True))

    def __post_init__(self):
        if self.site not in SITES:
            raise ValueError(f"unknown neuron site {self.site!r}; choose one of {SITES}")


def apply_edit(h: Float[Array, "B T F"], edit: SiteEdit) -> Float[Array, "B T F"]:
    """Applies one layer's slice of an edit (leaves without the L axis) to the site tensor."""
    delta = (edit.scale.astype(h.dtype) - 1) * h
    if edit.shift is not None:
        delta = delta + edit.shift.astype(h.dtype)
    return h + edit.where.astype(h.dtype) * delta


def as_tuple(edits: SiteEdit | Sequence[SiteEdit] | None) -> tuple[SiteEdit, ...]:
    if edits is None:
        return ()
    if isinstance(edits, SiteEdit):
        return (edits,)
    return tuple(edits)


def apply_edits(h: Float[Array, "B T F"], edits: tuple[SiteEdit, ...], site: str) -> Float[Array, "B T F"]:
    for edit in edits:
        if edit.site == site:
            h = apply_edit(h, edit)
    return h


def scale_edit(
    scale: Float[Array, "L F"], where: Float[Array, "L b t 1"] | Float[Array, "b t"], site: str = "product"
) -> SiteEdit:
    """A pure rescaling of neurons: `scale` per layer and neuron, applied where `where` is 1.

    `where` may be given without the layer axis ([b, t]); it is then shared by all layers.
    """
    scale = jnp.asarray(scale)
    n_layers = scale.shape[0]
    where = jnp.asarray(where, dtype=scale.dtype)
    if where.ndim == 2:
        where = jnp.broadcast_to(where[None, :, :, None], (n_layers, *where.shape, 1))
    return SiteEdit(
        scale=scale[:, None, None, :],
        shift=None,
        where=where,
        site=site,
    )
