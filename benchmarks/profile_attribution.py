"""Where the time of one attribution call goes: the fast schedule split into its parts, on SmolLM2 (CPU).

One call of the study's shape (B prompts, one answer token each, every layer, the first round's points) is
timed whole and by parts, each part its own compiled program, warm, median of `--repeats`:

- prefix: the one forward over the prompts that caches keys/values, residuals and activations;
- head: the LM head and softmax over every row (B x L x M rows of the vocabulary), forward and backward;
- rows: the rows through the layers, forward and backward = whole - prefix - head (derived, not timed apart);

with each part's counted FLOPs (`benchmarks/flops.py`) and GFLOP/s beside the measured rate of one matrix
product at the rows' typical shape. `--group-sizes` times the whole call at other scan group sizes and
`--xla-flags` at other XLA:CPU options (each option set in a fresh process: XLA reads its flags once).

    python benchmarks/profile_attribution.py --batch 4 --rule gauss_legendre --steps 12
    python benchmarks/profile_attribution.py --xla-flags "--xla_cpu_prefer_vector_width=512;--xla_cpu_multi_thread_eigen=false"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flops  # noqa: E402
from bench_attribution import matmul_rates, study_facts_one_bucket  # noqa: E402
from bench_kernels import time_call  # noqa: E402

from jaxkn.attribution import AttributionConfig, make_batch  # noqa: E402
from jaxkn.attribution.api import _first_round  # noqa: E402
from jaxkn.attribution.fast import default_group, prefix_pass  # noqa: E402
from jaxkn.attribution.results import gold_probability  # noqa: E402
from jaxkn.model import lm_head  # noqa: E402
from jaxkn.runtime import enable_compilation_cache  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="prompts per call (the study: queries_per_hop = 4)")
    p.add_argument("--rule", default="gauss_legendre", help="first-round quadrature (the converged preset's)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--group-sizes", default="", help="also time the whole call at these layers_per_group")
    p.add_argument("--xla-flags", default="", help="';'-separated XLA_FLAGS values, each timed in a fresh process")
    p.add_argument("--only-whole", action="store_true", help=argparse.SUPPRESS)  # the child of --xla-flags
    return p.parse_args(argv)


def whole_call(params, batch, cfg, config, repeats):
    fn = jax.jit(_first_round, static_argnames=("cfg", "config"))
    return time_call(lambda p, b: fn(p, b, cfg, config)[0], (params, batch), 1, repeats)


def main(argv=None):
    args = parse_args(argv)
    from jaxkn.convert.loading import load_default_model

    enable_compilation_cache()
    cfg, params, tok = load_default_model()
    facts, common = study_facts_one_bucket(cfg, tok, args.batch, 8 * args.batch)
    batch = make_batch(cfg, [p for p, _ in facts], [a for _, a in facts])
    config = AttributionConfig(quadrature=args.rule, steps=args.steps)
    n_points = args.steps + (0 if args.rule in ("left", "linspace") else 1)  # t = 0 is added when absent
    if args.only_whole:
        print(json.dumps({"whole_s": whole_call(params, batch, cfg, config, args.repeats)}))
        return

    lengths = [len(p) for p, _ in facts]
    t_mean = int(round(np.mean(lengths)))
    whole = whole_call(params, batch, cfg, config, args.repeats)
    prefix_fn = jax.jit(prefix_pass, static_argnames=("cfg", "site"))
    prefix = time_call(lambda p, b: prefix_fn(p, b, cfg, "product")[0], (params, batch), 1, args.repeats)
    n_rows = cfg.n_layers * n_points
    x = jax.random.normal(jax.random.key(0), (args.batch, n_rows, cfg.d_model), jnp.float32)
    gold = jnp.broadcast_to(batch.answer_tokens[:, :1], (args.batch, n_rows))

    def head_total(x):
        return gold_probability(lm_head(cfg, params, x), gold).sum()

    head_fn = jax.jit(jax.grad(head_total))
    head = time_call(head_fn, (x,), 1, args.repeats)
    rows = whole - prefix - head

    b = args.batch
    floor = flops.fast_floor(cfg, t_mean, n_points)
    head_flops = b * n_rows * flops.head_flops(cfg) * 2  # forward + input gradient
    prefix_flops = b * floor.prefix
    row_flops = b * floor.rows - head_flops
    rate_rows = b * n_points * cfg.n_layers // 2
    jax_rate, _ = matmul_rates(rate_rows, cfg.d_model, cfg.d_ff, 2)
    group = default_group(cfg.n_layers, cfg.n_layers)
    print(f"SmolLM2, {b} prompts of {lengths} tokens (bucket {common}), {args.rule} {args.steps} "
          f"({n_points} points with t = 0), all {cfg.n_layers} layers, {group} layers per scan group; "
          f"jax {jax.__version__}, {os.cpu_count()} CPUs")
    print(f"one [{rate_rows}, {cfg.d_model}] x [{cfg.d_model}, {cfg.d_ff}] product: {jax_rate:.0f} GFLOP/s\n")
    print("| part | s | share | counted GFLOP | GFLOP/s |\n|---|---:|---:|---:|---:|")
    for name, s, f in (("prefix pass", prefix, prefix_flops), ("LM head + softmax, fwd+bwd", head, head_flops),
                       ("rows through the layers, fwd+bwd (derived)", rows, row_flops),
                       ("whole call", whole, prefix_flops + head_flops + row_flops)):
        print(f"| {name} | {s:.3f} | {s / whole:.0%} | {f / 1e9:.0f} | {f / s / 1e9:.0f} |")

    sizes = [int(g) for g in args.group_sizes.split(",") if g]
    if sizes:
        print("\n| layers per scan group | whole call s |\n|---:|---:|")
        for g in sizes:
            t = whole_call(params, batch, cfg, AttributionConfig(quadrature=args.rule, steps=args.steps,
                                                                 layers_per_group=g), args.repeats)
            print(f"| {g} | {t:.3f} |")

    variants = [v for v in args.xla_flags.split(";") if v.strip()]
    if variants:
        print("\n| XLA_FLAGS | whole call s |\n|---|---:|")
        for flags_value in ["", *variants]:
            env = dict(os.environ, XLA_FLAGS=flags_value)
            cmd = [sys.executable, __file__, "--only-whole", "--batch", str(b), "--rule", args.rule, "--steps",
                   str(args.steps), "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            got = f"{json.loads(lines[-1])['whole_s']:.3f}" if out.returncode == 0 and lines else (
                "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1][:120])
            print(f"| `{flags_value or '(none)'}` | {got} |", flush=True)


if __name__ == "__main__":
    main()
