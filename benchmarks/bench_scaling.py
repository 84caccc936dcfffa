"""Scale-out benchmark: throughput against device count, and memory per device of 7B / 70B shapes per rule.

    python benchmarks/bench_scaling.py                      # both tables, markdown, on forced CPU devices
    python benchmarks/bench_scaling.py --part throughput --devices 1,2,4,8
    python benchmarks/bench_scaling.py --part memory

Throughput: for each device count N, a fresh subprocess with N devices (forced CPU devices via XLA_FLAGS when
the platform is CPU) runs a jitted forward pass (logits at the last position) over a batch of prompts on a small
random model, on an Nx1 mesh (data parallel, params replicated) and a 1xN mesh (tensor parallel); median of
`--repeats` timed calls after one warm-up. Each row also prints the max-norm relative error of the logits
against N = 1, so the table doubles as a check of the plumbing.

Memory: on 8 forced CPU devices, the forward pass (8 prompts x 128 tokens) is lowered with abstract params
(`jax.ShapeDtypeStruct` with shardings: nothing is allocated) for LLaMA-2-7B and LLaMA-2-70B shapes, compiled,
and `compiled.memory_analysis()` read: per-device argument bytes (the params' share, bf16) and temporaries.
XLA:CPU has no bf16 matmul, so its bf16 program holds a float32 copy of the weights it multiplies (temporaries
~2x the params); the column "temp, f32 params" compiles the same program with float32 params, which has no
such copy and bounds the activations an accelerator's bf16 program needs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SMALL = dict(vocab_size=512, d_model=128, d_ff=384, n_layers=4, n_heads=8, n_kv_heads=8, head_dim=16,
             max_position_embeddings=256)
LARGE = {
    "llama2-7b": dict(vocab_size=32000, d_model=4096, d_ff=11008, n_layers=32, n_heads=32, n_kv_heads=32,
                      head_dim=128),
    "llama2-70b": dict(vocab_size=32000, d_model=8192, d_ff=28672, n_layers=80, n_heads=64, n_kv_heads=8,
                       head_dim=128),
}
MEMORY_LAYOUTS = (("8x1", "replicated"), ("1x8", "fsdp"), ("1x8", "tensor"), ("2x4", "fsdp"), ("2x4", "tensor"))
GIB = 2 ** 30


def _last_logits(cfg):
    import jax
    import jax.numpy as jnp

    from jaxkn.model import forward

    def run(params, tokens):
        last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1)
        return forward(params, tokens, cfg, logits_at=last).logits[:, 0]

    return jax.jit(run)


def throughput_worker(n_devices: int, batch: int, length: int, repeats: int) -> list[dict]:
    import jax
    import numpy as np

    from jaxkn.config import ModelConfig
    from jaxkn.model import init_params
    from jaxkn.sharding import make_mesh, run_sharded, shard_params

    cfg = ModelConfig(**SMALL)
    params = init_params(cfg, jax.random.PRNGKey(0))
    tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (batch, length)).astype(np.int32)
    fn = _last_logits(cfg)
    reference = np.asarray(fn(params, tokens))
    rows = []
    layouts = [(n_devices, 1, "replicated")] + ([(1, n_devices, "tensor")] if n_devices > 1 else [])
    for data, model, rule in layouts:
        mesh = make_mesh(data, model)
        placed = shard_params(params, cfg, mesh, rule)
        out = run_sharded(fn, placed, tokens, mesh=mesh)  # warm-up (compiles)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run_sharded(fn, placed, tokens, mesh=mesh)
            times.append(time.perf_counter() - start)
        rows.append(dict(devices=n_devices, mesh=f"{data}x{model}", rule=rule, seconds=float(np.median(times)),
                         prompts_per_s=batch / float(np.median(times)), platform=jax.devices()[0].platform,
                         rel_err=float(np.abs(out - reference).max() / np.abs(reference).max())))
    return rows


def memory_worker(batch: int, length: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from jaxkn.config import ModelConfig
    from jaxkn.sharding import abstract_params, batch_sharding, make_mesh, parse_mesh

    rows = []
    for shape, dims in LARGE.items():
        for mesh_name, rule in MEMORY_LAYOUTS:
            mesh = make_mesh(*parse_mesh(mesh_name))
            row = dict(shape=shape, mesh=mesh_name, rule=rule)
            for dtype in ("bfloat16", "float32"):
                cfg = ModelConfig(**dims, param_dtype=dtype)
                tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32, sharding=batch_sharding(mesh))
                stats = _last_logits(cfg).lower(abstract_params(cfg, mesh, rule), tokens).compile().memory_analysis()
                row[f"args_{dtype}"] = stats.argument_size_in_bytes / GIB
                row[f"temp_{dtype}"] = stats.temp_size_in_bytes / GIB
            rows.append(row)
    return rows


def _spawn(args: list[str], n_devices: int) -> list[dict]:
    env = dict(os.environ)
    if env.get("JAX_PLATFORMS", "cpu") == "cpu":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n_devices}".strip()
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput_table(devices: list[int], batch: int, length: int, repeats: int) -> str:
    lines = [f"forward, small model {SMALL['d_model']}d x {SMALL['n_layers']} layers, batch {batch} x {length} "
             f"tokens, float32, median of {repeats}", "",
             "| devices | mesh | rule | platform | time (ms) | prompts/s | rel. err vs 1 device |",
             "|---:|---|---|---|---:|---:|---:|"]
    for n in devices:
        for r in _spawn(["--worker", "throughput", str(n), str(batch), str(length), str(repeats)], n):
            lines.append(f"| {r['devices']} | {r['mesh']} | {r['rule']} | {r['platform']} | {1e3 * r['seconds']:.1f} "
                         f"| {r['prompts_per_s']:.0f} | {r['rel_err']:.1e} |")
    return "\n".join(lines)


def memory_table(batch: int, length: int) -> str:
    lines = [f"forward, {batch} prompts x {length} tokens, per device, from compiled.memory_analysis() on 8 CPU devices",
             "", "| shape | mesh | rule | params bf16 (GiB) | temp bf16, XLA:CPU (GiB) | temp, f32 params (GiB) |",
             "|---|---|---|---:|---:|---:|"]
    for r in _spawn(["--worker", "memory", str(batch), str(length)], 8):
        lines.append(f"| {r['shape']} | {r['mesh']} | {r['rule']} | {r['args_bfloat16']:.2f} | "
                     f"{r['temp_bfloat16']:.2f} | {r['temp_float32']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("throughput", "memory", "both"), default="both")
    p.add_argument("--devices", default="1,2,4,8", help="device counts for the throughput table")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        rows = throughput_worker(*map(int, rest)) if kind == "throughput" else memory_worker(*map(int, rest))
        print(json.dumps(rows))
        return
    if args.part in ("throughput", "both"):
        print(throughput_table([int(n) for n in args.devices.split(",")], args.batch, args.length, args.repeats))
        print()
    if args.part in ("memory", "both"):
        print(memory_table(8, 128))


if __name__ == "__main__":
    main()
