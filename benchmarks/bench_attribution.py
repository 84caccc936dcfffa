"""jaxkn's attribution against the PyTorch baseline and captum, side by side in one process, on SmolLM2 (CPU).

For each prompt length, facts are cut to exactly that many tokens (a neutral lead-in is prepended) and each
implementation attributes the same facts with the same settings (site, zero baseline, left Riemann, m steps,
all layers). Printed per length: seconds per fact for jaxkn `fast` (compile time apart), jaxkn `reference`,
the EleutherAI-style PyTorch loop and captum `LayerIntegratedGradients`; the speed ratios; peak resident
memory of each phase (VmHWM, reset before each phase); and the agreement of the attributions with the
PyTorch baseline's (relative error, coarse KN sets at t = 0.2 ignoring neurons within 1e-3 * max).

    python benchmarks/bench_attribution.py --model smollm2 --lengths 8,16,32,64 --steps 20 --facts 1

`--batch B` attributes B prompts per jaxkn call (the study attributes a fact's queries together); seconds per
fact are then the call's time over B. `--study-facts N` adds a row on the study's own 3-shot prompts (the first
query of the first N hops of the built-in dataset, `format_prompt(query, COT_STYLES["none"])`, first answer
token; their lengths are printed). Counted GFLOP/s (`benchmarks/flops.py`) are each side's FLOPs over its
measured time: the fast schedule's floor for jaxkn (its grouped scan redoes a few layers per row, uncounted),
the loop's own work for PyTorch; both are printed beside each library's measured rate on one large product at
a row shape, so the efficiency of each side can be read against what the cores do.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flops  # noqa: E402
import torch_baseline  # noqa: E402

from jaxkn.attribution import AttributionConfig, answer_token_ids, attribute_batch, make_batch  # noqa: E402
from jaxkn.neurons import coarse_mask  # noqa: E402
from jaxkn.runtime import enable_compilation_cache  # noqa: E402

FACTS = [("The capital of France is", "Paris"), ("The capital of Japan is", "Tokyo"),
         ("The Eiffel Tower is in the city of", "Paris"), ("The chemical symbol of gold is", "Au"),
         ("The capital of Italy is", "Rome"), ("The capital of Germany is", "Berlin")]
LEAD_IN = ("Here are some facts about the world that every student learns at school, written down one after "
           "another in plain words, so that anyone can read them, remember them and repeat them later. ") * 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", choices=("smollm2",))
    p.add_argument("--lengths", default="8,16,32,64", help="prompt lengths in tokens")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--facts", type=int, default=1, help="facts per length")
    p.add_argument("--baseline-facts", type=int, default=1, help="facts per length for the PyTorch loop")
    p.add_argument("--captum-lengths", default="16", help="lengths at which captum runs ('' = none)")
    p.add_argument("--reference-lengths", default="16", help="lengths at which jaxkn's reference path runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1, help="prompts per jaxkn call (s/fact = call time / batch)")
    p.add_argument("--study-facts", type=int, default=0, help="add a row on N of the study's 3-shot prompts")
    return p.parse_args(argv)


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def facts_of_length(tok, n: int, count: int):
    lead = tok.encode(LEAD_IN)
    out = []
    for prompt, answer in FACTS[:count]:
        p_ids, a_ids = answer_token_ids(tok, prompt, answer)
        out.append(((lead + p_ids)[-n:], a_ids))
    return out


def study_facts(tok, count: int):
    """(prompt ids, first answer token) of the first query of the first `count` hops of the built-in dataset,
    in the study's 3-shot format."""
    from jaxkn.data import builtin_items, format_prompt
    from jaxkn.data.prompts import COT_STYLES

    out = []
    for item in builtin_items():
        for hop in (item.hop(1), item.hop(2)):
            p_ids, a_ids = answer_token_ids(tok, format_prompt(hop.queries[0], COT_STYLES["none"]), hop.answer)
            out.append((p_ids, a_ids[:1]))
            if len(out) == count:
                return out
    return out


def study_facts_one_bucket(cfg, tok, count: int, pool: int) -> tuple[list, int]:
    """`count` of the first `pool` study prompts (`study_facts`) that pad to the most common length bucket,
    so one compiled shape serves them all; and that bucket."""
    found = study_facts(tok, pool)
    buckets = [make_batch(cfg, [p], [a]).tokens.shape[1] for p, a in found]
    common = max(set(buckets), key=buckets.count)
    return [f for f, b in zip(found, buckets) if b == common][:count], common


def matmul_rates(rows: int, d: int, f: int, threads: int) -> tuple[float, float]:
    """GFLOP/s of one [rows, d] x [d, f] float32 product in JAX and in torch (median of 20)."""
    import torch

    torch.set_num_threads(threads)
    a, b = np.ones((rows, d), np.float32), np.ones((d, f), np.float32)
    mm = jax.jit(lambda x, y: x @ y)
    ja, jb = jax.numpy.asarray(a), jax.numpy.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    rates = []
    for run in (lambda: mm(ja, jb).block_until_ready(), lambda: ta @ tb):
        run()
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        rates.append(2 * rows * d * f / float(np.median(times)) / 1e9)
    return rates[0], rates[1]


def agreement(ref: np.ndarray, other: np.ndarray) -> tuple[float, bool]:
    err = float(np.abs(ref - other).max() / np.abs(ref).max())
    top = ref.max()
    clear = np.abs(ref - 0.2 * top) > 1e-3 * abs(top)
    same = bool(np.array_equal(coarse_mask(ref)[clear], coarse_mask(other)[clear]))
    return err, same


def time_jaxkn(params, cfg, facts, config, batch_size: int = 1):
    """(compile seconds, seconds per fact, scores per fact, peak MiB); `batch_size` prompts per call (the facts
    repeat to fill the last call)."""
    reset_peak()
    calls = [[facts[(i + j) % len(facts)] for j in range(batch_size)] for i in range(0, len(facts), batch_size)]
    batch = make_batch(cfg, [p for p, _ in calls[0]], [a for _, a in calls[0]])
    t0 = time.perf_counter()
    compiled = jax.jit(attribute_batch, static_argnames=("cfg", "config")).lower(params, batch, cfg, config).compile()
    compile_s = time.perf_counter() - t0
    scores, times = [], []
    for call in calls:
        batch = make_batch(cfg, [p for p, _ in call], [a for _, a in call])
        t0 = time.perf_counter()
        result = compiled(params, batch)
        got = np.asarray(jax.block_until_ready(result.scores), np.float64)
        times.append((time.perf_counter() - t0) / batch_size)
        scores.extend(got[j] for j in range(batch_size))
    return compile_s, float(np.mean(times)), scores[: len(facts)], peak_mib()


def time_torch(fn, model, facts, steps):
    reset_peak()
    scores, times = [], []
    for prompt, answer in facts:
        t0 = time.perf_counter()
        scores.append(fn(model, prompt, answer, steps=steps, quadrature="left"))
        times.append(time.perf_counter() - t0)
    return float(np.mean(times)), scores, peak_mib()


def main(argv=None):
    args = parse_args(argv)
    import torch
    import transformers

    from jaxkn.convert.loading import load_default_model
    from jaxkn.convert.smollm2 import gguf_path

    torch.set_num_threads(args.threads)
    enable_compilation_cache()
    cfg, params, tok = load_default_model()
    path = gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    lengths = [int(x) for x in args.lengths.split(",") if x]
    captum_at = {int(x) for x in args.captum_lengths.split(",") if x}
    reference_at = {int(x) for x in args.reference_lengths.split(",") if x}
    fast_cfg = AttributionConfig(method="fast", steps=args.steps)
    cases = [(str(n), n, facts_of_length(tok, n, args.facts)) for n in lengths]
    if args.study_facts:
        chosen, common = study_facts_one_bucket(cfg, tok, args.study_facts, 4 * args.study_facts)
        print(f"study prompts: {len(chosen)} of lengths {[len(p) for p, _ in chosen]} tokens (bucket {common})")
        cases.append(("study", int(np.mean([len(p) for p, _ in chosen])), chosen))
    rate_rows = args.batch * args.steps * cfg.n_layers // 2  # a typical row count at a middle layer
    jax_rate, torch_rate = matmul_rates(rate_rows, cfg.d_model, cfg.d_ff, args.threads)
    print(f"SmolLM2-135M, {cfg.n_layers} layers, m={args.steps} left Riemann, zero baseline, product site; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({args.threads} threads), {os.cpu_count()} CPUs; jaxkn batch {args.batch} prompts per call")
    print(f"one [{rate_rows}, {cfg.d_model}] x [{cfg.d_model}, {cfg.d_ff}] float32 product: jax {jax_rate:.0f} "
          f"GFLOP/s, torch {torch_rate:.0f} GFLOP/s")
    header = ("| tokens | jaxkn fast s/fact | compile s | jaxkn reference s/fact | PyTorch s/fact | captum s/fact "
              "| PyTorch / fast | arithmetic ratio | jaxkn GFLOP/s (floor) | PyTorch GFLOP/s | peak MiB fast / torch "
              "| rel. err fast vs torch | coarse sets equal |")
    rows = []
    for label, n, facts in cases:
        compile_s, fast_s, fast_scores, fast_mib = time_jaxkn(params, cfg, facts, fast_cfg, args.batch)
        ref_s = float("nan")
        if n in reference_at and label != "study":
            _, ref_s, ref_scores, _ = time_jaxkn(params, cfg, facts[:1], AttributionConfig(method="reference",
                                                                                          steps=args.steps))
            print(f"  [{label}] reference vs fast: rel. err {agreement(ref_scores[0], fast_scores[0])[0]:.2e}")
        base = facts[: args.baseline_facts]
        torch_s, torch_scores, torch_mib = time_torch(torch_baseline.attribute_fact, model, base, args.steps)
        captum_s = float("nan")
        if n in captum_at and label != "study":
            captum_s, captum_scores, _ = time_torch(torch_baseline.captum_attribute_fact, model, base[:1], args.steps)
            print(f"  [{label}] captum vs torch: rel. err {agreement(torch_scores[0], captum_scores[0])[0]:.2e}")
        errs = [agreement(t, f) for t, f in zip(torch_scores, fast_scores)]
        t_mean = int(round(np.mean([len(p) for p, _ in base])))
        fast_flops = flops.fast_floor(cfg, t_mean, args.steps).total
        torch_flops = flops.baseline_work(cfg, t_mean, args.steps).total
        row = (f"| {label} | {fast_s:.2f} | {compile_s:.1f} | {ref_s:.2f} | {torch_s:.2f} | {captum_s:.2f} "
               f"| {torch_s / fast_s:.1f}x | {torch_flops / fast_flops:.1f}x | {fast_flops / fast_s / 1e9:.0f} "
               f"| {torch_flops / torch_s / 1e9:.0f} | {fast_mib:.0f} / {torch_mib:.0f} "
               f"| {max(e for e, _ in errs):.1e} | {all(s for _, s in errs)} |")
        rows.append(row)
        print(row, flush=True)
    print("\n" + header + "\n|" + "---|" * 13 + "\n" + "\n".join(rows))

if __name__ == "__main__":
    main()
