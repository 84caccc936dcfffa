"""Memory of converged-mode attribution at 7B/8B shapes, from compiled memory analysis (nothing is allocated).

    python benchmarks/bench_memory.py                           # llama2-7b and llama3-8b, markdown table
    python benchmarks/bench_memory.py --shapes llama2-7b --chunks 0,8,32 --prompt-len 32 --batch 1

Converged mode (METHOD.md §3) runs the fixed rule on every layer, then refinement rounds with up to
`max_points_per_layer` (256) points on the layers still above the tolerance. Its worst case is every layer open
at the last round: 32 layers x 256 points of rows, each to the LM head. The script lowers both programs of the
fast schedule (`jaxkn.attribution.api._first_round` with left m = 20, and `_refine_round` on all layers at 256
points) with abstract params (`jax.ShapeDtypeStruct`: nothing allocated), compiles them on CPU and reads
`compiled.memory_analysis()`, for several `point_chunk` settings (0 = automatic, `AUTO_CHUNK_BYTES`).

XLA:CPU has no bf16 matmul, so a bf16 program compiled on CPU holds a float32 copy of the weights it multiplies:
its temporaries say nothing about an accelerator. As in `bench_scaling.py`, the program is compiled with float32
params; its temporaries (activations, logits and gradients, all in float32) bound what the bf16 program needs.
"GPU estimate" = bf16 params + those temporaries: an upper bound, not a GPU measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

GIB = 2 ** 30


def _abstract(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _lowered(cfg, first: bool, n_rows: int, length: int, steps: int, budget: int, chunk: int,
             group: int | None = None):
    """(name, lowered program): the first round, or the all-layers refinement round at the budget."""
    import jax
    import jax.numpy as jnp

    from jaxkn.attribution import AttributionConfig
    from jaxkn.attribution.api import _first_round_jit, _refine_round
    from jaxkn.attribution.inputs import AttributionBatch
    from jaxkn.model import init_params

    params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    s = jax.ShapeDtypeStruct
    batch = AttributionBatch(s((n_rows, length), jnp.int32), s((n_rows, length), jnp.bool_),
                             s((n_rows, 1), jnp.int32), s((n_rows, 1), jnp.int32), s((n_rows, 1), jnp.bool_))
    config = AttributionConfig(steps=steps, tolerance=0.01, max_points_per_layer=budget, point_chunk=chunk,
                               layers_per_group=group)
    n_layers, dtype = cfg.n_layers, jnp.dtype(cfg.param_dtype)
    if first:
        return f"first round, left m={steps}", _first_round_jit.lower(params, batch, cfg, config)
    samples = (s((n_layers, n_rows, 1, steps + 2), jnp.float32),) * 2
    return f"refine, {n_layers} layers x {budget} pts", _refine_round.lower(
        params, batch, cfg, config, budget, s((n_layers,), jnp.int32), s((n_layers, n_rows, 1, cfg.d_ff), dtype),
        samples, s((n_rows, n_layers, 1), jnp.float32))


def worker(shapes: list[str], chunks: list[int], n_rows: int, length: int, steps: int, budget: int,
           group: int | None = None, programs: str = "first,refine") -> list[dict]:
    import jax
    import numpy as np
    from shapes import jaxkn_config

    from jaxkn.attribution.chunking import auto_point_chunk
    from jaxkn.model import param_shapes

    rows = []
    for shape in shapes:
        cfg = jaxkn_config(shape, "float32")
        leaves = [np.prod(v) for v in jax.tree_util.tree_leaves(
            param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))]
        bf16_params = 2 * float(sum(leaves)) / GIB
        for chunk in chunks:
            for first in [p == "first" for p in programs.split(",")]:
                # automatic: the chunk a bf16 run picks (itemsize 2), set explicitly on the float32 program
                auto = auto_point_chunk(cfg, n_rows * cfg.n_layers, steps + 1 if first else budget, 2)
                name, lowered = _lowered(cfg, first, n_rows, length, steps, budget, chunk or auto, group)
                start = time.time()
                stats = lowered.compile().memory_analysis()
                temp = stats.temp_size_in_bytes / GIB
                if group and first:
                    name += f", {group} layers per group"
                rows.append(dict(shape=shape, program=name, chunk=chunk or f"auto ({auto})", temp_f32=temp,
                                 args_f32=stats.argument_size_in_bytes / GIB, params_bf16=bf16_params,
                                 estimate=bf16_params + temp, compile_s=time.time() - start))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], n_rows: int, length: int) -> str:
    lines = [f"{n_rows} prompt(s) x {length} tokens, 1 answer token, every layer, product site, zero baseline; "
             "compiled.memory_analysis() on CPU with float32 params (not a GPU run)", "",
             "| shape | program | point_chunk | temp, f32 params (GiB) | bf16 params (GiB) | GPU estimate (GiB) |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['program']} | {r['chunk']} | {r['temp_f32']:.2f} | {r['params_bf16']:.2f} "
                     f"| {r['estimate']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="llama2-7b,llama3-8b")
    parser.add_argument("--chunks", default="0,256,64,16,4", help="point_chunk values; 0 = automatic")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--budget", type=int, default=256)
    parser.add_argument("--layers-per-group", type=int, help="the first round's scan groups (default: automatic)")
    parser.add_argument("--programs", default="first,refine")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = worker(args.shapes.split(","), [int(c) for c in args.chunks.split(",")], args.batch, args.prompt_len,
                  args.steps, args.budget, args.layers_per_group, args.programs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(table(rows, args.batch, args.prompt_len))


if __name__ == "__main__":
    main()
