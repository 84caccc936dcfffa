"""Times the fused Pallas SwiGLU MLP against the XLA path at real model shapes.

    # GPU (bf16, attribution's row counts: steps x prompts):
    python benchmarks/bench_kernels.py --shape llama2-7b --rows 20,80,160,320,640 --dtype bfloat16
    # CPU, interpret mode (shows it runs and agrees; interpret-mode times say nothing about speed):
    python benchmarks/bench_kernels.py --shape smollm2 --rows 20,40 --dtype float32 --interpret

Two workloads per row count R, both jitted, timed after warmup as the median of repeats with
`block_until_ready`:
- fwd: y = (silu(x W_gate) * (x W_up) * s) W_down.
- fwd+bwd: y and the gradients the attribution engine takes (x and s; weight gradients are not asked for).
Useful FLOPs are counted the same for both implementations: 6 R D F for fwd, 12 R D F for fwd+bwd (the
forward's three matmuls, then dh = dy W_down^T and dx = dg W_gate^T + du W_up^T). The kernel's backward also
recomputes x W_gate and x W_up (4 R D F more) instead of storing them; that work is counted against it.
Achieved TFLOP/s = useful FLOPs / time; "peak" is the fraction of the device's dense matrix peak.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxkn.kernels.swiglu import swiglu_mlp, swiglu_reference

SHAPES = {"llama2-7b": (4096, 11008), "llama3-8b": (4096, 14336), "mistral-7b": (4096, 14336),
          "smollm2": (576, 1536)}
# Dense bf16 matrix peaks (TFLOP/s), by substring of jax's device_kind. H200 has H100's tensor cores; the
# H200 in this workplace was measured at ~790 on large bf16 GEMMs.
PEAKS = {"H100": 989.0, "H200": 989.0}


def device_peak(given: float | None) -> float | None:
    if given is not None:
        return given
    kind = jax.devices()[0].device_kind
    for name, peak in PEAKS.items():
        if name in kind:
            return peak
    if jax.default_backend() != "cpu":
        sys.exit(f"no known matrix peak for device {kind!r}: pass --peak-tflops")
    return None


def operands(rows, d_model, d_ff, dtype, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    normal = lambda k, shape, fan: (jax.random.normal(k, shape) / np.sqrt(fan)).astype(dtype)  # noqa: E731
    x = normal(ks[0], (rows, d_model), 1.0)
    weights = (normal(ks[1], (d_model, d_ff), d_model), normal(ks[2], (d_model, d_ff), d_model),
               normal(ks[3], (d_ff, d_model), d_ff))
    scale = jax.random.uniform(ks[4], (rows, d_ff), jnp.float32, 0.0, 1.0)
    cotangent = jax.random.normal(ks[5], (rows, d_model), jnp.float32)
    return x, weights, scale, cotangent


def workloads(mlp):
    """(fwd, fwd+bwd) jitted functions of (x, weights, scale, cotangent)."""
    fwd = jax.jit(lambda x, w, s: mlp(x, *w, s))

    def loss(x, s, w, c):
        return jnp.sum(mlp(x, *w, s).astype(jnp.float32) * c)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return (lambda x, w, s, c: fwd(x, w, s)), (lambda x, w, s, c: grad(x, s, w, c))


def time_call(fn, args, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def run(args) -> list[dict]:
    d_model, d_ff = SHAPES[args.shape]
    dtype = jnp.dtype(args.dtype)
    peak = device_peak(args.peak_tflops)
    impls = {"xla": swiglu_reference,
             "pallas": lambda *a: swiglu_mlp(*a, interpret=args.interpret)}
    rows_out = []
    for rows in [int(r) for r in args.rows.split(",")]:
        x, w, s, c = operands(rows, d_model, d_ff, dtype)
        results = {}
        for impl, mlp in impls.items():
            for name, fn, flops in zip(("fwd", "fwd+bwd"), workloads(mlp), (6, 12)):
                seconds = time_call(fn, (x, w, s, c), args.warmup, args.repeats)
                results[impl, name] = fn(x, w, s, c)
                tflops = flops * rows * d_model * d_ff / seconds / 1e12
                rows_out.append(dict(rows=rows, impl=impl, workload=name, ms=seconds * 1e3, tflops=tflops,
                                     peak=None if peak is None else tflops / peak))
        for r in rows_out[-4:]:  # agreement of every output (y; dx and ds) with the XLA path
            got, want = results["pallas", r["workload"]], results["xla", r["workload"]]
            r["rel_err"] = max(rel_err(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
    return rows_out


def markdown(rows_out, args) -> str:
    kind = jax.devices()[0].device_kind + (" (Pallas interpret mode)" if args.interpret else "")
    lines = [f"device: {kind}; shape {args.shape} {SHAPES[args.shape]} (D, F); dtype {args.dtype}; "
             f"median of {args.repeats} after {args.warmup} warmup", "",
             "| rows | impl | workload | time (ms) | TFLOP/s | fraction of peak | rel. err vs xla |",
             "|---:|---|---|---:|---:|---:|---:|"]
    for r in rows_out:
        peak = "n/a" if r["peak"] is None else f"{r['peak']:.3f}"
        lines.append(f"| {r['rows']} | {r['impl']} | {r['workload']} | {r['ms']:.3f} | {r['tflops']:.4f} | "
                     f"{peak} | {r['rel_err']:.2e} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    parser.add_argument("--rows", default="20,80,160,320,640", help="comma-separated row counts R")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--interpret", action="store_true", help="Pallas interpret mode (CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device's dense matrix peak")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if jax.default_backend() == "cpu" and not args.interpret:
        sys.exit("on CPU the kernel only runs in interpret mode: add --interpret (and a small --shape)")
    print(markdown(run(args), args))


if __name__ == "__main__":
    main()
