"""Fused SwiGLU MLP with neuron scaling: a `jnp` reference and a Pallas kernel with the same signature.

    h = silu(x @ W_gate) * (x @ W_up) * s        (s: per row and neuron; None = no scaling)
    y = h @ W_down

`s` is the attribution engine's integrated-gradients factor or an intervention's factor, applied at the
"product" site (METHOD.md §2). The kernel never writes h (or gate/up) to memory: each (row tile, F tile)
program computes its h tile from x and the weight columns and adds h_tile @ W_down[tile] into a float32
output accumulator. Its `jax.custom_vjp` backward recomputes the tile (nothing but the inputs is saved) and
gives, again without materialising [R, F] intermediates except the requested ds:

    dh = dy @ W_down^T                       ds = dh * silu(g) * u          (g = x W_gate, u = x W_up)
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
) -> Float[Array, "... D"]:
    """The function the kernel computes, in plain `jnp` (float32 accumulation, output in x's dtype)."""
    g = jnp.matmul(x, w_gate, preferred_element_type=_F32)
    u = jnp.matmul(x, w_up, preferred_element_type=_F32)
    h = jax.nn.silu(g) * u
    if scale is not None:
        h = h * scale.astype(_F32)
    return jnp.matmul(h.astype(w_down.dtype), w_down, preferred_element_type=_F32).astype(x.dtype)


# ---- kernel bodies (values in, values out; shared by both schedules) ----------------------------------

def _dot(a, b, contract=((1,), (0,))):
    precision = jax.lax.Precision.HIGHEST if a.dtype == _F32 else None
    return jax.lax.dot_general(a, b, (contract, ((), ())), precision=precision, preferred_element_type=_F32)


_TRANSPOSED_RHS = ((1,), (1,))  # a @ b.T without materialising the transpose


def _sigmoid(g):
    return 1.0 / (1.0 + jnp.exp(-g))  # exp lowers on every Pallas backend


def _scaled_product(g, u, s):
    h = g * _sigmoid(g) * u
    return h if s is None else h * s.astype(_F32)


def _backward_tile(g, u, dh, s):
    """(dg, du, ds) of one tile from the recomputed pre-activations and dh = dy @ W_down^T."""
    sig = _sigmoid(g)
    act = g * sig
    ds = None if s is None else dh * act * u
    dp = dh if s is None else dh * s.astype(_F32)
    return dp * u * sig * (1.0 + g * (1.0 - sig)), dp * act, ds


def _split_refs(refs, n_in, has_scale):
    """Kernel refs are (x, wg, wu, wd, [dy], [s], init, outputs...); init is aliased to the first output."""
    inputs, outputs = refs[:n_in], refs[n_in:]
    s_ref = inputs[-2] if has_scale else None
    return inputs, s_ref, outputs


# ---- "sequential" schedule (TPU Mosaic, interpret): F steps run in order, output tile resident ---------

def _fwd_sequential(*refs, has_scale):
    (x_ref, wg_ref, wu_ref, wd_ref, *_), s_ref, (o_ref,) = _split_refs(refs, 5 + has_scale, has_scale)

    @pl.when(pl.program_id(1) == 0)
    def _zero():
        o_ref[...] = jnp.zeros(o_ref.shape, _F32)

    x = x_ref[...]
    h = _scaled_product(_dot(x, wg_ref[...]), _dot(x, wu_ref[...]), None if s_ref is None else s_ref[...])
    o_ref[...] += _dot(h.astype(wd_ref.dtype), wd_ref[...])


def _bwd_sequential(*refs, has_scale):
    (x_ref, wg_ref, wu_ref, wd_ref, dy_ref, *_), s_ref, outs = _split_refs(refs, 6 + has_scale, has_scale)
    dx_ref = outs[0]

    @pl.when(pl.program_id(1) == 0)
    def _zero():
        dx_ref[...] = jnp.zeros(dx_ref.shape, _F32)

    x, wg, wu = x_ref[...], wg_ref[...], wu_ref[...]
    dh = _dot(dy_ref[...], wd_ref[...], _TRANSPOSED_RHS)
    dg, du, ds = _backward_tile(_dot(x, wg), _dot(x, wu), dh, None if s_ref is None else s_ref[...])
    if has_scale:
        outs[1][...] = ds
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


def _fwd_atomic(*refs, has_scale, chunk):
    (x_ref, wg_ref, wu_ref, wd_ref, *_), s_ref, (o_ref,) = _split_refs(refs, 5 + has_scale, has_scale)
    g, u = _gate_up(x_ref, wg_ref, wu_ref, chunk)
    h = _scaled_product(g, u, None if s_ref is None else s_ref[...]).astype(wd_ref.dtype)

    def down(k, carry):
        cols = pl.ds(pl.multiple_of(k * chunk, chunk), chunk)
        _atomic_add(o_ref, (slice(None), cols), _dot(h, wd_ref[:, cols]))
        return carry

    jax.lax.fori_loop(0, x_ref.shape[1] // chunk, down, 0)


def _bwd_atomic(*refs, has_scale, chunk):
    (x_ref, wg_ref, wu_ref, wd_ref, dy_ref, *_), s_ref, outs = _split_refs(refs, 6 + has_scale, has_scale)
    g, u, dh = _gate_up(x_ref, wg_ref, wu_ref, chunk, extra=(dy_ref, wd_ref))
    dg, du, ds = _backward_tile(g, u, dh, None if s_ref is None else s_ref[...])
    if has_scale:
        outs[1][...] = ds
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


def _body(plan: _Plan, forward: bool, has_scale: bool):
    if plan.blocks.schedule == "atomic":
        fn = _fwd_atomic if forward else _bwd_atomic
        return functools.partial(fn, has_scale=has_scale, chunk=plan.blocks.model)
    return functools.partial(_fwd_sequential if forward else _bwd_sequential, has_scale=has_scale)


def _forward_padded(plan, x, wg, wu, wd, s, init=None):
    operands = (x, wg, wu, wd) + (() if s is None else (s,))
    kinds = ("rd", "df", "df", "fd") + (() if s is None else ("rf",))
    init = jnp.zeros((x.shape[0], x.shape[1]), _F32) if init is None else init
    (y,) = _kernel_call(plan, _body(plan, True, s is not None), operands, kinds, ("rd",), init, "swiglu_fused_fwd")
    return y


def _backward_padded(plan, x, wg, wu, wd, s, dy):
    operands = (x, wg, wu, wd, dy) + (() if s is None else (s,))
    kinds = ("rd", "df", "df", "fd", "rd") + (() if s is None else ("rf",))
    out_kinds = ("rd",) + (() if s is None else ("rf",))
    outs = _kernel_call(plan, _body(plan, False, s is not None), operands, kinds, out_kinds,
                        jnp.zeros(x.shape, _F32), "swiglu_fused_bwd")
    return outs[0], (outs[1] if s is not None else None)


def _pad_to(a, shape):
    pads = [(0, n - m) for m, n in zip(a.shape, shape)]
    return a if all(p == (0, 0) for p in pads) else jnp.pad(a, pads)


def _padded_shapes(plan: _Plan, n_rows, d_model, d_ff):
    b = plan.blocks
    d_pad = round_up(d_model, b.model) if b.schedule == "atomic" else d_model
    return round_up(n_rows, b.rows), d_pad, round_up(d_ff, b.ff)


def _pad_all(plan, x, wg, wu, wd, s):
    rows, dp, fp = _padded_shapes(plan, x.shape[0], x.shape[1], wg.shape[1])
    s = None if s is None else _pad_to(s, (rows, fp))
    return _pad_to(x, (rows, dp)), _pad_to(wg, (dp, fp)), _pad_to(wu, (dp, fp)), _pad_to(wd, (fp, dp)), s


# ---- custom_vjp over 2-D operands --------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(plan, x, wg, wu, wd, s):
    n_rows, d_model = x.shape
    y = _forward_padded(plan, *_pad_all(plan, x, wg, wu, wd, s))
    return y[:n_rows, :d_model].astype(x.dtype)


def _fused_fwd(plan, x, wg, wu, wd, s):
    return _fused(plan, x, wg, wu, wd, s), (x, wg, wu, wd, s)  # inputs only: the tile is recomputed


def _fused_bwd(plan, residuals, dy):
    x, wg, wu, wd, s = residuals
    n_rows, d_model = x.shape
    padded = _pad_all(plan, x, wg, wu, wd, s)
    dy_p = _pad_to(dy, padded[0].shape)
    dx, ds = _backward_padded(plan, *padded, dy_p)
    dx = dx[:n_rows, :d_model].astype(x.dtype)
    ds = None if s is None else ds[:n_rows, : wg.shape[1]].astype(s.dtype)
    # Weight gradients: plain jnp; XLA drops them under jit when only dx / ds are used (attribution).
    _, weight_vjp = jax.vjp(lambda a, b, c: swiglu_reference(x, a, b, c, s), wg, wu, wd)
    return (dx, *weight_vjp(dy), ds)


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
    *,
    interpret: bool = False,
    blocks: SwigluBlocks | None = None,
) -> Float[Array, "... D"]:
    """`swiglu_reference` as a fused Pallas kernel, differentiable in every argument.

    Args:
      x: rows to transform; leading axes are flattened into R rows.
      w_gate, w_up, w_down: the layer's MLP weights.
      scale: per row and neuron factor s (broadcast to [..., F]); None means no scaling (no ones array made).
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
    s2 = None if scale is None else jnp.broadcast_to(scale, (*lead, d_ff)).reshape(-1, d_ff)
    y = _fused(_Plan(blocks=blocks, interpret=interpret), x2, w_gate, w_up, w_down, s2)
    return y.reshape(*lead, d_model)


__all__ = ["swiglu_reference", "swiglu_mlp", "kernel_target"]
