"""The fused SwiGLU kernel (Pallas interpret mode on CPU) against its jnp reference: forward, every gradient,
both schedules, ragged shapes, bfloat16, poisoned output buffers, and block choice at real model sizes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkn.kernels import swiglu
from jaxkn.kernels.blocks import SwigluBlocks, choose_blocks
from jaxkn.kernels.swiglu import swiglu_mlp, swiglu_reference

# (rows, D, F, row tile, F tile, D chunk): ragged rows, F not a multiple of its tile, D not a multiple of 128.
SHAPES = [
    (37, 100, 300, 16, 128, 32),   # everything ragged
    (48, 160, 384, 16, 128, 32),   # everything divides
    (5, 96, 200, 16, 64, 16),      # fewer rows than a tile
]
REAL_SHAPES = {"llama2-7b": (4096, 11008), "llama3-8b": (4096, 14336), "mistral-7b": (4096, 14336),
               "smollm2": (576, 1536)}


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def report(got, want) -> str:
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    return f"max abs diff {diff.max():.3g}, mean abs diff {diff.mean():.3g}, rel {rel_err(got, want):.3g}"


def operands(rows, d_model, d_ff, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    x = jax.random.normal(ks[0], (rows, d_model))
    w_gate = jax.random.normal(ks[1], (d_model, d_ff)) / np.sqrt(d_model)
    w_up = jax.random.normal(ks[2], (d_model, d_ff)) / np.sqrt(d_model)
    w_down = jax.random.normal(ks[3], (d_ff, d_model)) / np.sqrt(d_ff)
    scale = jax.random.uniform(ks[4], (rows, d_ff), minval=-0.5, maxval=2.0)  # non-zero almost surely
    cotangent = jax.random.normal(ks[5], (rows, d_model))
    cast = lambda a: a.astype(dtype)  # noqa: E731
    return cast(x), cast(w_gate), cast(w_up), cast(w_down), scale, cotangent


def value_and_grads(fn, x, w_gate, w_up, w_down, scale, cotangent):
    """y and the gradients of <y, cotangent> with respect to x, every weight and (when given) the scale."""
    def loss(x, w_gate, w_up, w_down, scale):
        y = fn(x, w_gate, w_up, w_down, scale)
        return jnp.sum(y.astype(jnp.float32) * cotangent), y

    argnums = (0, 1, 2, 3) if scale is None else (0, 1, 2, 3, 4)
    (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))(
        x, w_gate, w_up, w_down, scale)
    return y, grads


def kernel_fn(blocks):
    return lambda *args: swiglu_mlp(*args, interpret=True, blocks=blocks)


def reference_fn_f32(x, w_gate, w_up, w_down, scale):
    up = lambda a: a.astype(jnp.float32)  # noqa: E731
    return swiglu_reference(up(x), up(w_gate), up(w_up), up(w_down), scale)


@pytest.mark.parametrize("schedule", ["sequential", "atomic"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:3])))
def test_forward_and_gradients_match_reference_float32(shape, schedule):
    rows, d_model, d_ff, tm, tf, tk = shape
    blocks = SwigluBlocks(rows=tm, ff=tf, model=tk, schedule=schedule)
    args = operands(rows, d_model, d_ff)
    y, grads = value_and_grads(kernel_fn(blocks), *args)
    y_ref, grads_ref = value_and_grads(swiglu_reference, *args)
    assert rel_err(y, y_ref) <= 1e-5, report(y, y_ref)
    for name, got, want in zip(["x", "w_gate", "w_up", "w_down", "scale"], grads, grads_ref):
        assert got.shape == want.shape, name
        assert np.abs(np.asarray(want)).max() > 0, f"degenerate test: zero reference gradient for {name}"
        assert rel_err(got, want) <= 1e-5, f"d/d{name}: {report(got, want)}"


@pytest.mark.parametrize("schedule", ["sequential", "atomic"])
def test_without_scale_matches_reference(schedule):
    blocks = SwigluBlocks(rows=16, ff=64, model=32, schedule=schedule)
    x, w_gate, w_up, w_down, _, cotangent = operands(21, 80, 200, seed=1)
    y, grads = value_and_grads(kernel_fn(blocks), x, w_gate, w_up, w_down, None, cotangent)
    y_ref, grads_ref = value_and_grads(swiglu_reference, x, w_gate, w_up, w_down, None, cotangent)
    assert rel_err(y, y_ref) <= 1e-5, report(y, y_ref)
    for got, want in zip(grads, grads_ref):
        assert rel_err(got, want) <= 1e-5, report(got, want)


@pytest.mark.parametrize("schedule", ["sequential", "atomic"])
def test_scale_and_shift_match_reference(schedule):
    """h = silu(g) u s + c, the attribution engine's form: gradients for x, s and c (dc = dh)."""
    blocks = SwigluBlocks(rows=16, ff=128, model=32, schedule=schedule)
    x, w_gate, w_up, w_down, scale, cotangent = operands(37, 100, 300, seed=7)
    shift = 0.1 * jax.random.normal(jax.random.PRNGKey(8), scale.shape)

    def loss(fn, x, s, c):
        return jnp.sum(fn(x, w_gate, w_up, w_down, s, c) * cotangent)

    kernel = lambda *a: swiglu_mlp(*a, interpret=True, blocks=blocks)  # noqa: E731
    got = jax.jit(jax.value_and_grad(functools.partial(loss, kernel), argnums=(0, 1, 2)))(x, scale, shift)
    want = jax.value_and_grad(functools.partial(loss, swiglu_reference), argnums=(0, 1, 2))(x, scale, shift)
    assert rel_err(got[0], want[0]) <= 1e-5
    for name, g, w in zip(["x", "scale", "shift"], got[1], want[1]):
        assert rel_err(g, w) <= 1e-5, f"d/d{name}: {report(g, w)}"


@pytest.mark.parametrize("schedule", ["sequential", "atomic"])
def test_bfloat16_inputs_match_float32_reference(schedule):
    blocks = SwigluBlocks(rows=16, ff=128, model=32, schedule=schedule)
    args = operands(37, 96, 300, dtype=jnp.bfloat16, seed=2)
    y, grads = value_and_grads(kernel_fn(blocks), *args)
    y_ref, grads_ref = value_and_grads(reference_fn_f32, *args)
    assert y.dtype == jnp.bfloat16
    assert rel_err(y, y_ref) <= 1e-2, report(y, y_ref)
    for name, got, want in zip(["x", "w_gate", "w_up", "w_down", "scale"], grads, grads_ref):
        assert rel_err(got, want) <= 1e-2, f"d/d{name}: {report(got, want)}"


def test_every_output_element_is_written():
    """Poison the sequential schedule's (aliased) output with NaN: every tile must be overwritten."""
    plan = swiglu._Plan(blocks=SwigluBlocks(rows=16, ff=128), interpret=True)
    x, w_gate, w_up, w_down, scale, _ = operands(37, 100, 300, seed=3)
    padded = swiglu._pad_all(plan, x, w_gate, w_up, w_down, scale, None)
    poison = jnp.full((padded[0].shape[0], padded[0].shape[1]), jnp.nan, jnp.float32)
    y = swiglu._forward_padded(plan, *padded, init=poison)
    assert np.isfinite(np.asarray(y)).all(), f"{int(np.isnan(np.asarray(y)).sum())} elements never written"
    want = swiglu_reference(x, w_gate, w_up, w_down, scale)
    assert rel_err(y[:37, :100], want) <= 1e-5
    assert np.all(np.asarray(y[37:]) == 0), "padded rows must stay exactly zero"


def test_leading_axes_broadcast_scale_and_vmap():
    """[B, T, D] input with a [B, 1, F] scale, and a vmap over scales (an intervention sweep)."""
    blocks = SwigluBlocks(rows=8, ff=64, model=16)
    x, w_gate, w_up, w_down, _, _ = operands(6, 48, 96, seed=4)
    x = x.reshape(2, 3, 48)
    scales = jax.random.uniform(jax.random.PRNGKey(5), (4, 2, 1, 96), minval=0.0, maxval=2.0)
    sweep = jax.jit(jax.vmap(lambda s: swiglu_mlp(x, w_gate, w_up, w_down, s, interpret=True, blocks=blocks)))
    got = sweep(scales)
    want = jax.vmap(lambda s: swiglu_reference(x, w_gate, w_up, w_down, s))(scales)
    assert got.shape == (4, 2, 3, 48)
    assert rel_err(got, want) <= 1e-5, report(got, want)


@pytest.mark.parametrize("model", sorted(REAL_SHAPES))
@pytest.mark.parametrize("target", ["gpu", "tpu"])
def test_blocks_at_real_shapes_need_no_weight_padding(model, target):
    d_model, d_ff = REAL_SHAPES[model]
    for rows in (20, 80, 640):
        b = choose_blocks(rows, d_model, d_ff, target=target)
        assert d_ff % b.ff == 0, (b, d_ff)
        assert b.rows >= min(rows, 16) and b.rows & (b.rows - 1) == 0
        if target == "gpu":
            assert b.schedule == "atomic" and d_model % b.model == 0
        else:
            assert b.schedule == "sequential" and b.ff % 128 == 0


@pytest.mark.parametrize("target", ["gpu", "tpu"])
def test_kernel_traces_at_llama2_7b_shapes(target):
    """The full-size call is well-formed (traced only, under eval_shape: no memory, no compute)."""
    d_model, d_ff, rows = 4096, 11008, 160
    blocks = choose_blocks(rows, d_model, d_ff, target=target)
    spec = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.bfloat16)  # noqa: E731
    fn = lambda *a: swiglu_mlp(*a, interpret=True, blocks=blocks)  # noqa: E731
    out = jax.eval_shape(fn, spec(rows, d_model), spec(d_model, d_ff), spec(d_model, d_ff),
                         spec(d_ff, d_model), spec(rows, d_ff))
    assert out.shape == (rows, d_model) and out.dtype == jnp.bfloat16
    weights = (spec(d_model, d_ff), spec(d_model, d_ff), spec(d_ff, d_model))
    loss = lambda x, s: fn(x, *weights, s).astype(jnp.float32).sum()  # noqa: E731
    grads = jax.eval_shape(jax.grad(loss, argnums=(0, 1)), spec(rows, d_model), spec(rows, d_ff))
    assert grads[0].shape == (rows, d_model) and grads[1].shape == (rows, d_ff)


def test_clear_errors():
    x, w_gate, w_up, w_down, _, _ = operands(4, 32, 64)
    if jax.default_backend() == "cpu":
        with pytest.raises(ValueError, match="pallas_interpret"):
            swiglu_mlp(x, w_gate, w_up, w_down)
    with pytest.raises(ValueError, match="MLP weight shapes"):
        swiglu_mlp(x, w_gate, w_up, w_down.T, interpret=True)
    with pytest.raises(ValueError, match="power-of-two"):
        SwigluBlocks(rows=24, ff=64, schedule="atomic")
    with pytest.raises(ValueError, match="unknown kernel schedule"):
        SwigluBlocks(rows=16, ff=64, schedule="parallel")
    with pytest.raises(ValueError, match="unknown kernel target"):
        choose_blocks(16, 32, 64, target="cpu")
