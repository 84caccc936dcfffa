"""Fused SwiGLU MLP with neuron scaling: a `jnp` reference and a Pallas kernel with the same signature.

    h = silu(x @ W_gate) * (x @ W_up) * s + c    (s, c: per row and neuron; None = no scaling / no shift)
    y = h @ W_down

`s` is an intervention's (or integrated gradients') factor and `c` an additive term (the attribution engine
writes t a + (1 - t) b + probe into the site as scale t plus shift, and differentiates the probe), both at the
"product" site (METHOD.md §2). The kernel never writes h (or gate/up) to memory: each (row tile, F tile)
program computes its h tile from x and the weight columns and adds h_tile @ W_down[tile] into a float32
output accumulator. Its `jax.custom_vjp` backward recomputes the tile (nothing but the inputs is saved) and
gives, again without materialising [R, F] intermediates other than the requested ds and dc:

    dh = dy @ W_down^T    dc = dh            ds = dh * silu(g) * u          (g = x W_gate, u = x W_up)
    dp = dh * s    du = dp * silu(g)         dg = dp * u * sig(g) * (1 + g (1 - sig(g)))
    dx = dg @ W_gate^T + du @ W_up^T

Weight gradients are computed with plain `jnp` (the reference's vjp): correct, and dead code that XLA removes
under `jit` when, as in attribution, nobody asks for them.

Numerics: matmuls accumulate in float32 (`preferred_element_type`); h is cast to W_down's dtype before the
down projection, as the XLA model path does. Schedules and tiles: `kernels/blocks.py`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float

from jaxkn.kernels.blocks import SwigluBlocks, choose_blocks, round_up

_F32 = jnp.float32


def swiglu_reference(
    x: Float[Array, "... D"],
    w_gate: Float[Array, "D F"],
    w_up: Float[Array, "D F"],
    w_down: Float[Array, "F D"],
    scale: Float[Array, "... F"] | None = None,
    shift: Float[Array, "... F"] | None = None,
) -> Float[Array, "... D"]:
    """The function the kernel computes, in plain `jnp` (float32 accumulation, output in x's dtype)."""
    g = jnp.matmul(x, w_gate, preferred_element_type=_F32)
    u = jnp.matmul(x, w_up, preferred_element_type=_F32)
    h = jax.nn.silu(g) * u
    if scale is not None:
        h = h * scale.astype(_F32)
    if shift is not None:
        h = h + shift.astype(_F32)
    return jnp.matmul(h.astype(w_down.dtype), w_down, preferred_element_type=_F32).astype(x.dtype)


# ---- kernel bodies (values in, values out; shared by both schedules) ----------------------------------

def _dot(a, b, contract=((1,), (0,))):
    precision = jax.lax.Precision.HIGHEST if a.dtype == _F32 else None
    return jax.lax.dot_general(a, b, (contract, ((), ())), precision=precision, preferred_element_type=_F32)


_TRANSPOSED_RHS = ((1,), (1,))  # a @ b.T without materialising the transpose


def _sigmoid(g):
    return 1.0 / (1.0 + jnp.exp(-g))  # exp lowers on every Pallas backend


def _scaled_product(g, u, s, c):
    h = g * _sigmoid(g) * u
    h = h if s is None else h * s.astype(_F32)
    return h if c is None else h + c.astype(_F32)


def _backward_tile(g, u, dh, s):
    """(dg, du, ds) of one tile from the recomputed pre-activations and dh = dy @ W_down^T."""
    sig = _sigmoid(g)
    act = g * sig
    ds = None if s is None else dh * act * u
    dp = dh if s is None else dh * s.astype(_F32)
    return dp * u * sig * (1.0 + g * (1.0 - sig)), dp * act, ds


def _split_refs(refs, n_in, has_scale, has_shift):
    """Kernel refs are (x, wg, wu, wd, [dy], [s], [c], init, outputs...); init is aliased to output 0.
    Returns (inputs, s value or None, c value or None, outputs)."""
    inputs, outputs = refs[:n_in], refs[n_in:]
    s = inputs[n_in - 2 - has_shift][...] if has_scale else None
    c = inputs[n_in - 2][...] if has_shift else None
    return inputs, s, c, outputs


def _store_site_grads(refs, ds, dh, has_scale, has_shift):
    """Writes this tile's ds (when s is given) and dc = dh (when a shift c is given), in that order."""
    if has_scale:
        refs[0][...] = ds
    if has_shift:
        refs[has_scale][...] = dh


# ---- "sequential" schedule (TPU Mosaic, interpret): F steps run in order, output tile resident ---------

def _fwd_sequential(*refs, has_scale, has_shift):
    (x_ref, wg_ref, wu_ref, wd_ref, *_), s, c, (o_ref,) = _split_refs(
        refs, 5 + has_scale + has_shift, has_scale, has_shift)

    @pl.when(pl.program_id(1) == 0)
    def _zero():
        o_ref[...] = jnp.zeros(o_ref.shape, _F32)

    x = x_ref[...]
    h = _scaled_product(_dot(x, wg_ref[...]), _dot(x, wu_ref[...]), s, c)
    o_ref[...] += _dot(h.astype(wd_ref.dtype), wd_ref[...])


def _bwd_sequential(*refs, has_scale, has_shift):
    (x_ref, wg_ref, wu_ref, wd_ref, dy_ref, *_), s, _, outs = _split_refs(
        refs, 6 + has_scale + has_shift, has_scale, has_shift)
    dx_ref = outs[0]

    @pl.when(pl.program_id(1) == 0)
    def _zero():
        dx_ref[...] = jnp.zeros(dx_ref.shape, _F32)

    x, wg, wu = x_ref[...], wg_ref[...], wu_ref[...]
    dh = _dot(dy_ref[...], wd_ref[...], _TRANSPOSED_RHS)
    dg, du, ds = _backward_tile(_dot(x, wg), _dot(x, wu), dh, s)
    _store_site_grads(outs[1:], ds, dh, has_scale, has_shift)
    dx_ref[...] += _dot(dg.astype(wg.dtype), wg, _TRANSPOSED_RHS) + _dot(du.astype(wu.dtype), wu, _TRANSPOSED_RHS)


# ---- "atomic" schedule (GPU Triton): parallel programs, D walked in chunks, split-F atomic adds ---------

def _atomic_add(ref, idx, value):
    from jax.experimental.pallas import triton as pl_triton  # Triton primitive; interpret mode discharges it

    pl_triton.atomic_add(ref, idx, value)


def _gate_up(x_ref, wg_ref, wu_ref, chunk, extra=None):
    """g, u (and dh when extra = (dy_ref, wd_ref)) of one tile, accumulated over D chunks."""
    tm, tf = x_ref.shape[0], wg_ref.shape[1]
    n_chunks = x_ref.shape[1] // chunk

    def body(k, acc):
        cols = pl.ds(pl.multiple_of(k * chunk, chunk), chunk)
        xk = x_ref[:, cols]
        acc = (acc[0] + _dot(xk, wg_ref[cols, :]), acc[1] + _dot(xk, wu_ref[cols, :]), *acc[2:])
        if extra is not None:
            acc = (*acc[:2], acc[2] + _dot(extra[0][:, cols], extra[1][:, cols], _TRANSPOSED_RHS))
        return acc

    zeros = jnp.zeros((tm, tf), _F32)
    return jax.lax.fori_loop(0, n_chunks, body, (zeros,) * (2 if extra is None else 3))


def _fwd_atomic(*refs, has_scale, has_shift, chunk):
    (x_ref, wg_ref, wu_ref, wd_ref, *_), s, c, (o_ref,) = _split_refs(
        refs, 5 + has_scale + has_shift, has_scale, has_shift)
    g, u = _gate_up(x_ref, wg_ref, wu_ref, chunk)
    h = _scaled_product(g, u, s, c).astype(wd_ref.dtype)

    def down(k, carry):
        cols = pl.ds(pl.multiple_of(k * chunk, chunk), chunk)
        _atomic_add(o_ref, (slice(None), cols), _dot(h, wd_ref[:, cols]))
        return carry

    jax.lax.fori_loop(0, x_ref.shape[1] // chunk, down, 0)


def _bwd_atomic(*refs, has_scale, has_shift, chunk):
    (x_ref, wg_ref, wu_ref, wd_ref, dy_ref, *_), s, _, outs = _split_refs(
        refs, 6 + has_scale + has_shift, has_scale, has_shift)
    g, u, dh = _gate_up(x_ref, wg_ref, wu_ref, chunk, extra=(dy_ref, wd_ref))
    dg, du, ds = _backward_tile(g, u, dh, s)
    _store_site_grads(outs[1:], ds, dh, has_scale, has_shift)
    dg, du = dg.astype(wg_ref.dtype), du.astype(wu_ref.dtype)

    def dx_chunk(k, carry):
        cols = pl.ds(pl.multiple_of(k * chunk, chunk), chunk)
        part = _dot(dg, wg_ref[cols, :], _TRANSPOSED_RHS) + _dot(du, wu_ref[cols, :], _TRANSPOSED_RHS)
        _atomic_add(outs[0], (slice(None), cols), part)
        return carry

    jax.lax.fori_loop(0, x_ref.shape[1] // chunk, dx_chunk, 0)


# ---- pallas_call wrappers (padded operands in, padded float32 results out) ----------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class _Plan:
    """Static settings of one kernel call: tiles and whether to interpret."""

    blocks: SwigluBlocks
    interpret: bool


def _compiler_params(plan: _Plan):
    if plan.interpret:
        return None
    if plan.blocks.schedule == "atomic":
        from jax.experimental.pallas import triton as pl_triton

        return pl_triton.CompilerParams(num_warps=plan.blocks.num_warps, num_stages=plan.blocks.num_stages)
    from jax.experimental.pallas import tpu as pltpu

    return pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))


def _kernel_call(plan: _Plan, body, operands, kinds, out_kinds, init, name):
    """One pallas_call over (row tiles, F tiles). `kinds` name each operand's tiling:
    "rd" rows x D, "df" D x F, "fd" F x D, "rf" rows x F. `init` (rows x D, float32) is aliased to output 0."""
    tm, tf = plan.blocks.rows, plan.blocks.ff
    n_rows, d_model = operands[0].shape
    n_ff = operands[1].shape[1]
    specs = {
        "rd": pl.BlockSpec((tm, d_model), lambda i, j: (i, 0)),
        "df": pl.BlockSpec((d_model, tf), lambda i, j: (0, j)),
        "fd": pl.BlockSpec((tf, d_model), lambda i, j: (j, 0)),
        "rf": pl.BlockSpec((tm, tf), lambda i, j: (i, j)),
    }
    shapes = {"rd": (n_rows, d_model), "rf": (n_rows, n_ff)}
    return pl.pallas_call(
        body,
        grid=(n_rows // tm, n_ff // tf),
        in_specs=[specs[k] for k in kinds] + [specs["rd"]],
        out_specs=[specs[k] for k in out_kinds],
        out_shape=[jax.ShapeDtypeStruct(shapes[k], _F32) for k in out_kinds],
        input_output_aliases={len(operands): 0},
        interpret=plan.interpret,
        compiler_params=_compiler_params(plan),
        name=name,
    )(*operands, init)


def _body(plan: _Plan, forward: bool, has_scale: bool, has_shift: bool):
    flags = dict(has_scale=has_scale, has_shift=has_shift)
    if plan.blocks.schedule == "atomic":
        return functools.partial(_fwd_atomic if forward else _bwd_atomic, chunk=plan.blocks.model, **flags)
    return functools.partial(_fwd_sequential if forward else _bwd_sequential, **flags)


def _site_terms(s, c):
    """The optional per-neuron operands, in kernel order, and their tilings."""
    terms = tuple(a for a in (s, c) if a is not None)
    return terms, ("rf",) * len(terms)


def _forward_padded(plan, x, wg, wu, wd, s, c, init=None):
    terms, term_kinds = _site_terms(s, c)
    init = jnp.zeros(x.shape, _F32) if init is None else init
    body = _body(plan, True, s is not None, c is not None)
    (y,) = _kernel_call(plan, body, (x, wg, wu, wd, *terms), ("rd", "df", "df", "fd", *term_kinds), ("rd",),
                        init, "swiglu_fused_fwd")
    return y


def _backward_padded(plan, x, wg, wu, wd, s, c, dy):
    """(dx, ds or None, dc or None), padded, float32."""
    terms, term_kinds = _site_terms(s, c)
    body = _body(plan, False, s is not None, c is not None)
    dx, *site_grads = _kernel_call(plan, body, (x, wg, wu, wd, dy, *terms), ("rd", "df", "df", "fd", "rd", *term_kinds),
                                   ("rd", *term_kinds), jnp.zeros(x.shape, _F32), "swiglu_fused_bwd")
    ds = site_grads.pop(0) if s is not None else None
    dc = site_grads.pop(0) if c is not None else None
    return dx, ds, dc


def _pad_to(a, shape):
    pads = [(0, n - m) for m, n in zip(a.shape, shape)]
    return a if all(p == (0, 0) for p in pads) else jnp.pad(a, pads)


def _padded_shapes(plan: _Plan, n_rows, d_model, d_ff):
    b = plan.blocks
    d_pad = round_up(d_model, b.model) if b.schedule == "atomic" else d_model
    return round_up(n_rows, b.rows), d_pad, round_up(d_ff, b.ff)


def _pad_all(plan, x, wg, wu, wd, s, c):
    rows, dp, fp = _padded_shapes(plan, x.shape[0], x.shape[1], wg.shape[1])
    s, c = (None if a is None else _pad_to(a, (rows, fp)) for a in (s, c))
    return _pad_to(x, (rows, dp)), _pad_to(wg, (dp, fp)), _pad_to(wu, (dp, fp)), _pad_to(wd, (fp, dp)), s, c


# ---- custom_vjp over 2-D operands --------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(plan, x, wg, wu, wd, s, c):
    n_rows, d_model = x.shape
    y = _forward_padded(plan, *_pad_all(plan, x, wg, wu, wd, s, c))
    return y[:n_rows, :d_model].astype(x.dtype)


def _fused_fwd(plan, x, wg, wu, wd, s, c):
    return _fused(plan, x, wg, wu, wd, s, c), (x, wg, wu, wd, s, c)  # inputs only: tiles are recomputed


def _fused_bwd(plan, residuals, dy):
    x, wg, wu, wd, s, c = residuals
    (n_rows, d_model), d_ff = x.shape, wg.shape[1]
    padded = _pad_all(plan, x, wg, wu, wd, s, c)
    dx, ds, dc = _backward_padded(plan, *padded, _pad_to(dy, padded[0].shape))
    dx = dx[:n_rows, :d_model].astype(x.dtype)
    ds, dc = (None if g is None else g[:n_rows, :d_ff].astype(a.dtype) for g, a in ((ds, s), (dc, c)))
    # Weight gradients: plain jnp; XLA drops them under jit when only dx / ds / dc are used (attribution).
    _, weight_vjp = jax.vjp(lambda a, b, d: swiglu_reference(x, a, b, d, s, c), wg, wu, wd)
    return (dx, *weight_vjp(dy), ds, dc)


_fused.defvjp(_fused_fwd, _fused_bwd)


def kernel_target(interpret: bool) -> str:
    """"interpret", "gpu" or "tpu"; a clear error on a backend with no Pallas lowering."""
    if interpret:
        return "interpret"
    backend = jax.default_backend()
    if backend in ("gpu", "cuda", "rocm"):
        return "gpu"
    if backend == "tpu":
        return "tpu"
    raise ValueError(
        f"the compiled Pallas MLP needs a GPU or TPU, but JAX's backend is {backend!r}: "
        "use mlp_impl='pallas_interpret' (interpret=True) to run the kernel here, or mlp_impl='xla'"
    )


def swiglu_mlp(
    x: Float[Array, "... D"],
    w_gate: Float[Array, "D F"],
    w_up: Float[Array, "D F"],
    w_down: Float[Array, "F D"],
    scale: Float[Array, "... F"] | None = None,
    shift: Float[Array, "... F"] | None = None,
    *,
    interpret: bool = False,
    blocks: SwigluBlocks | None = None,
) -> Float[Array, "... D"]:
    """`swiglu_reference` as a fused Pallas kernel, differentiable in every argument.

    Args:
      x: rows to transform; leading axes are flattened into R rows.
      w_gate, w_up, w_down: the layer's MLP weights.
      scale: per row and neuron factor s (broadcast to [..., F]); None means no scaling (no ones array made).
      shift: per row and neuron additive term c after the scaling (h = silu(g) u s + c), or None.
      interpret: run the kernel in Pallas interpret mode (any backend, slow; for tests on CPU).
      blocks: tiles and schedule; default `choose_blocks` for the backend and shapes.
    """
    *lead, d_model = x.shape
    d_ff = w_gate.shape[1]
    if w_gate.shape != (d_model, d_ff) or w_up.shape != (d_model, d_ff) or w_down.shape != (d_ff, d_model):
        raise ValueError(
            f"MLP weight shapes do not match x [..., {d_model}]: w_gate {w_gate.shape}, w_up {w_up.shape}, "
            f"w_down {w_down.shape} (expected [D, F], [D, F], [F, D])"
        )
    x2 = x.reshape(-1, d_model)
    if blocks is None:
        blocks = choose_blocks(x2.shape[0], d_model, d_ff, target=kernel_target(interpret))
    elif not interpret:
        kernel_target(interpret)  # same clear error on CPU
    s2, c2 = (None if a is None else jnp.broadcast_to(a, (*lead, d_ff)).reshape(-1, d_ff) for a in (scale, shift))
    y = _fused(_Plan(blocks=blocks, interpret=interpret), x2, w_gate, w_up, w_down, s2, c2)
    return y.reshape(*lead, d_model)


__all__ = ["swiglu_reference", "swiglu_mlp", "kernel_target"]
