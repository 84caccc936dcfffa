"""Knowledge-neuron attribution at 7B scale: the PyTorch baseline against jaxkn's fast path, on one device.

Both sides get the same random-weight model (initialised in JAX, copied into transformers through
`jaxkn.convert.mapping.HF_NAMES`), the same prompts and answers, m integration points and all layers:

- torch: `benchmarks/torch_baseline.py`, the EleutherAI-style loop (per layer, m scaled copies of the prompt,
  full forward and backward), one fact at a time, transformers on cuda when available, else cpu;
- jaxkn: `jaxkn.attribution.attribute_batch` with `method="fast"` (METHOD.md §8), per MLP implementation
  (`--impls`: xla, pallas, pallas_interpret) and per batch size of facts.

Reported per row: compile time (apart), seconds per fact, facts per second, speed-up over the baseline, peak
device memory, counted TFLOP/s (`benchmarks/flops.py`: the fast schedule's floor for jaxkn, the baseline's
own work for torch) and its fraction of the device's matrix peak; then the relative error (METHOD.md §9) of
jaxkn's attributions against the baseline's on the same fact, and a projection to the whole TFRKN dataset.

    # GPU, LLaMA-2-7B shape, bf16 (the issue's headline measurement):
    python benchmarks/bench_7b.py --shape llama2-7b --prompt-len 32 --steps 20 --batch-sizes 1,2,4,8 \\
        --dtype bfloat16 --impls xla,pallas --baseline torch --json llama2-7b.json
    # CPU smoke run (what CI runs, through `main`):
    python benchmarks/bench_7b.py --shape tiny --prompt-len 8 --batch-sizes 1,2 --dtype float32 --impls xla

JAX code here is device-agnostic (`jax.devices()[0]`); on a TPU pass `--baseline none` (no torch device).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the device

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import flops  # noqa: E402
import shapes  # noqa: E402

from jaxkn.attribution import AttributionConfig, attribute_batch, make_batch  # noqa: E402
from jaxkn.model import forward, init_params  # noqa: E402

# Dense bf16 matrix peaks (TFLOP/s) by substring of jax's device_kind. The H200 in this workplace measured ~790.
PEAKS = {"H100": 989.0, "H200": 989.0}
TFRKN_ITEMS, QUERIES_PER_ITEM, PAPER_GPU_HOURS = 4450, 13, 96.0
GB = 1e9


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", default="llama2-7b", choices=sorted(shapes.SHAPES))
    p.add_argument("--prompt-len", type=int, default=32, help="prompt tokens T (the answer is one token)")
    p.add_argument("--steps", type=int, default=20, help="integration points m (left Riemann, zero baseline)")
    p.add_argument("--batch-sizes", default="1,2,4,8", help="facts per jaxkn call, comma-separated")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16"))
    p.add_argument("--impls", default="xla,pallas", help="jaxkn MLP implementations (cfg.mlp_impl values)")
    p.add_argument("--baseline", default="torch", choices=("torch", "none"))
    p.add_argument("--layers-per-group", type=int, default=None, help="fast path scan groups (default: jaxkn's)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed jaxkn calls per row (median)")
    p.add_argument("--baseline-warmup", type=int, default=1)
    p.add_argument("--baseline-repeats", type=int, default=1, help="timed baseline facts (median)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense matrix peak (default: known GPUs, else the measured matmul peak)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="converged mode (METHOD.md §3) at this completeness tolerance, first round = --steps "
                        "--quadrature; its time is the warm call (the first call, compile included, is reported "
                        "as compile s); counted TFLOP/s stay the first round's floor")
    p.add_argument("--quadrature", default="left", help="the rule (converged mode: its first round)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    args.impls = [i for i in args.impls.split(",") if i]
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--batch-sizes must list positive integers, e.g. 1,2,4,8")
    return args


# ---- the workload -----------------------------------------------------------------------------------------

def make_facts(cfg, params, n_facts: int, prompt_len: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Random prompts (ids >= 3, clear of special tokens) and, as each answer, the model's own next token (the
    attribution of a token the model predicts, as on real facts)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, cfg.vocab_size, size=(n_facts, prompt_len), dtype=np.int32)
    logits = jax.jit(lambda p, t: forward(p, t, cfg.replace(mlp_impl="xla"),
                                          logits_at=jnp.full((t.shape[0], 1), t.shape[1] - 1)).logits)(params, tokens)
    answers = np.asarray(jnp.argmax(logits[:, 0], axis=-1))
    return tokens.tolist(), [[int(a)] for a in answers]


def attribution_config(args) -> AttributionConfig:
    return AttributionConfig(method="fast", steps=args.steps, quadrature=args.quadrature, baseline="zero",
                             site="product", layers_per_group=args.layers_per_group, tolerance=args.tolerance)


# ---- measuring --------------------------------------------------------------------------------------------

def timed(fn, warmup: int, repeats: int, sync) -> tuple[float, object]:
    """Median seconds of `repeats` calls after `warmup` calls, and the last result."""
    out = None
    for _ in range(warmup):
        out = sync(fn())
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        out = sync(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def jax_peak_bytes() -> tuple[float | None, str]:
    """Peak bytes in use on the JAX device, or the process's peak RSS where the device keeps no statistics."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return float(stats["peak_bytes_in_use"]), "device peak (cumulative)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "host RSS peak (process)"


def measure_matmul_tflops(dtype: str) -> float:
    """Measured dense matmul rate of the JAX device at this dtype (n x n x n, median of repeats)."""
    n = 1024 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    seconds, _ = timed(lambda: matmul(a, a), 2, 5, jax.block_until_ready)
    return 2 * n**3 / seconds / 1e12


def peak_tflops(given: float | None, measured: float) -> tuple[float, str]:
    if given is not None:
        return given, "given (--peak-tflops)"
    kind = jax.devices()[0].device_kind
    for name, peak in PEAKS.items():
        if name in kind:
            return peak, f"{name} dense bf16 datasheet"
    return measured, "measured matmul (no datasheet peak known for this device)"


def xla_temp_bytes(compiled) -> float | None:
    """Scratch bytes XLA planned for a compiled program (None where the backend does not say).

    (XLA's `cost_analysis` FLOPs are not reported: it counts a loop body once, and the fast path is scans.)"""
    try:
        return float(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # some backends report no memory analysis; the column is then blank
        return None


def kernel_calls(params, batch, cfg, config) -> int:
    """How many `pallas_call` sites the traced attribution program holds (0: every MLP runs through XLA)."""
    jaxpr = jax.make_jaxpr(lambda p, b: attribute_batch(p, b, cfg, config))(params, batch)
    return str(jaxpr).count("pallas_call")


def run_jaxkn(args, cfg, params, prompts, answers, impl: str) -> tuple[list[dict], np.ndarray]:
    """One row per batch size for one MLP implementation; returns the rows and fact 0's scores [L, F]."""
    cfg = cfg.replace(mlp_impl=impl)
    config = attribution_config(args)
    floor = flops.fast_floor(cfg, args.prompt_len, args.steps).total
    rows, first_scores = [], None
    for size in args.batch_sizes:
        batch = make_batch(cfg, prompts[:size], answers[:size])
        start = time.perf_counter()
        if config.tolerance is None:  # a fixed rule is one compiled program
            compiled = jax.jit(attribute_batch, static_argnames=("cfg", "config")).lower(
                params, batch, cfg=cfg, config=config).compile()
            run = lambda: compiled(params, batch)  # noqa: E731,B023 (called at once)
        else:  # converged mode loops over refinement rounds on the host: each round is its own program
            compiled = None
            run = lambda: attribute_batch(params, batch, cfg, config)  # noqa: E731,B023 (called at once)
            jax.block_until_ready(run())  # compiles every round this batch needs
        compile_s = time.perf_counter() - start
        seconds, out = timed(run, args.warmup, args.repeats, jax.block_until_ready)
        if first_scores is None:
            first_scores = np.asarray(out.scores[0], np.float64)
        peak, peak_kind = jax_peak_bytes()
        rows.append(dict(
            impl=f"jaxkn-{impl}", batch=size, compile_s=compile_s, seconds=seconds, s_per_fact=seconds / size,
            facts_per_s=size / seconds, counted_flop_per_fact=floor, tflops=floor * size / seconds / 1e12,
            peak_bytes=peak, peak_kind=peak_kind,
            xla_temp_bytes=xla_temp_bytes(compiled) if compiled is not None else None,
            points_max=int(jnp.max(out.points_per_layer)), flagged=int(jnp.sum(out.flagged)),
            kernel_calls=kernel_calls(params, batch, cfg, config) if impl != "xla" else 0,
            completeness_max=float(jnp.max(out.completeness_error))))
        print(f"  {rows[-1]['impl']} B={size}: {seconds / size:.4g} s/fact (compile {compile_s:.1f} s)",
              file=sys.stderr, flush=True)
    return rows, first_scores


def run_torch(args, cfg, params, prompts, answers) -> tuple[dict, np.ndarray]:
    """The PyTorch baseline on fact 0 (and the next ones for repeats); returns its row and fact 0's scores."""
    import torch
    import torch_baseline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_torch_model(args.shape, args.dtype, cfg, params, device)
    sync = (lambda x: (torch.cuda.synchronize(), x)[1]) if device == "cuda" else (lambda x: x)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    attribute = lambda i: torch_attribute(torch_baseline, model, prompts[i], answers[i], args)  # noqa: E731
    for i in range(args.baseline_warmup):
        sync(attribute(i % len(prompts)))
    times, scores = [], None
    for i in range(max(args.baseline_repeats, 1)):
        start = time.perf_counter()
        result = sync(attribute(i % len(prompts)))
        times.append(time.perf_counter() - start)
        if i == 0:
            scores = result
    seconds = statistics.median(times)
    if device == "cuda":
        peak, peak_kind = float(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "host RSS peak (process)"
    work = flops.baseline_work(cfg, args.prompt_len, args.steps).total
    row = dict(impl=f"torch-{device}", batch=1, compile_s=None, seconds=seconds, s_per_fact=seconds,
               facts_per_s=1 / seconds, counted_flop_per_fact=work, tflops=work / seconds / 1e12, peak_bytes=peak, peak_kind=peak_kind, xla_temp_bytes=None,
               kernel_calls=None, completeness_max=None)
    del model
    return row, scores


def torch_attribute(torch_baseline, model, prompt: list[int], answer: list[int], args) -> np.ndarray:
    """Scores [L, F] of one fact from the baseline, with jaxkn's settings (left Riemann, zero baseline)."""
    return torch_baseline.attribute_fact(model, prompt, answer, steps=args.steps, quadrature="left")


def build_torch_model(shape: str, dtype: str, cfg, params, device: str):
    """A transformers model of the shape holding exactly `params` (copied through HF_NAMES), in eval mode."""
    import torch
    import transformers

    from jaxkn.convert.mapping import HF_NAMES

    torch_dtype = getattr(torch, dtype)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(shapes.hf_config(shape, dtype), dtype=torch_dtype)
    model.eval().requires_grad_(False)
    state = model.state_dict()
    for leaf, (pattern, transform) in HF_NAMES.items():
        if leaf == "lm_head" and cfg.tie_embeddings:
            continue
        group, _, name = leaf.rpartition("/")
        source = params[group][name] if group else params[name]
        targets = [(pattern.format(i=i), source[i]) for i in range(cfg.n_layers)] if group else [(pattern, source)]
        for target, value in targets:
            tensor = to_torch(value, torch_dtype)
            state[target].copy_(tensor.T if transform == "transpose" else tensor)
    return model


def to_torch(x: jax.Array, torch_dtype):
    """A JAX array as a torch tensor: zero-copy through DLPack where both sides allow it, else via the host."""
    import torch

    try:
        return torch.from_dlpack(x)
    except Exception:  # e.g. a TPU array, or a dtype DLPack does not carry
        return torch.from_numpy(np.asarray(x.astype(jnp.float32))).to(torch_dtype)


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """METHOD.md §9: max |difference| / max |reference| over the fact's whole [L, F] tensor."""
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


# ---- reporting --------------------------------------------------------------------------------------------

def projection_hours(facts_per_s: float) -> float:
    """Hours to attribute every TFRKN query (4,450 items x ~13 queries) at a measured rate."""
    return TFRKN_ITEMS * QUERIES_PER_ITEM / facts_per_s / 3600


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: list[dict], baseline_s: float | None, peak: float) -> str:
    head = ("| impl | facts/call | compile s | s/fact | facts/s | x baseline | peak mem GB | XLA temp GB "
            "| counted TFLOP/s | % peak | Pallas sites |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        speedup = None if baseline_s is None else baseline_s / r["s_per_fact"]
        lines.append("| " + " | ".join([
            r["impl"], str(r["batch"]), _fmt(r["compile_s"], ".1f"), _fmt(r["s_per_fact"], ".4g"),
            _fmt(r["facts_per_s"], ".3g"), _fmt(speedup, ".1f"), _fmt(r["peak_bytes"] / GB, ".2f"),
            _fmt(r["xla_temp_bytes"] and r["xla_temp_bytes"] / GB, ".2f"), _fmt(r["tflops"], ".3g"),
            _fmt(100 * r["tflops"] / peak, ".1f"),
            "-" if r["kernel_calls"] is None else str(r["kernel_calls"])]) + " |")
    return "\n".join(lines)


def summary_lines(result: dict) -> list[str]:
    m, lines = result["meta"], []
    lines.append(f"shape {m['shape']} ({m['params_b']:.2f}B params), T={m['prompt_len']}, m={m['steps']}, "
                 f"all {m['n_layers']} layers, {m['dtype']}, device {m['device']} ({m['platform']})")
    lines.append(f"versions: jax {m['jax']}, torch {m.get('torch', '-')}, transformers {m.get('transformers', '-')}")
    lines.append(f"matrix peak used: {m['peak_tflops']:.4g} TFLOP/s ({m['peak_source']}); measured matmul "
                 f"{m['measured_matmul_tflops']:.4g} TFLOP/s")
    floor, work = m["fast_floor_tflop"], m["baseline_work_tflop"]
    lines.append(f"counted FLOPs per fact: fast floor {floor:.4g} TFLOP, baseline work {work:.4g} TFLOP "
                 f"(arithmetic ratio {work / floor:.1f}x: arithmetic, not a measurement); at the peak the floor "
                 f"allows {floor / m['peak_tflops']:.4g} s/fact")
    for impl, err in result["agreement"].items():
        lines.append(f"agreement on fact 0, {impl} vs baseline: relative error {err:.3g} (METHOD.md §9)")
    for name, p in result["projection"].items():
        lines.append(f"projection, TFRKN ({TFRKN_ITEMS} items x {QUERIES_PER_ITEM} queries) with {name}: "
                     f"{p['hours']:.3g} h at {p['facts_per_s']:.3g} facts/s (paper: ~{PAPER_GPU_HOURS:g} GPU hours)")
    return lines


def environment(args, cfg, measured: float, peak: float, peak_source: str) -> dict:
    meta = dict(shape=args.shape, params_b=shapes.parameter_count(cfg) / 1e9, prompt_len=args.prompt_len,
                steps=args.steps, n_layers=cfg.n_layers, dtype=args.dtype, device=jax.devices()[0].device_kind,
                platform=jax.default_backend(), jax=jax.__version__, measured_matmul_tflops=measured,
                peak_tflops=peak, peak_source=peak_source, command="python " + " ".join(sys.argv),
                attribution=attribution_config(args).to_dict(),
                fast_floor_tflop=flops.fast_floor(cfg, args.prompt_len, args.steps).total / 1e12,
                baseline_work_tflop=flops.baseline_work(cfg, args.prompt_len, args.steps).total / 1e12)
    if args.baseline == "torch":
        import torch
        import transformers

        meta.update(torch=torch.__version__, transformers=transformers.__version__,
                    torch_device="cuda" if torch.cuda.is_available() else "cpu")
    return meta


def main(argv=None) -> dict:
    """Runs the benchmark, prints the markdown report and returns the results as a dict."""
    args = parse_args(argv)
    cfg = shapes.jaxkn_config(args.shape, args.dtype)
    params = init_params(cfg, jax.random.PRNGKey(args.seed))
    n_facts = max(max(args.batch_sizes), args.baseline_warmup + args.baseline_repeats)
    prompts, answers = make_facts(cfg, params, n_facts, args.prompt_len, args.seed)
    measured = measure_matmul_tflops(args.dtype)
    peak, peak_source = peak_tflops(args.peak_tflops, measured)
    result = dict(meta=environment(args, cfg, measured, peak, peak_source), rows=[], agreement={}, projection={})
    scores = {}
    for impl in args.impls:
        rows, scores[impl] = run_jaxkn(args, cfg, params, prompts, answers, impl)
        result["rows"] += rows
    baseline_s = None
    if args.baseline == "torch":
        row, reference = run_torch(args, cfg, params, prompts, answers)
        result["rows"].insert(0, row)
        baseline_s = row["s_per_fact"]
        result["agreement"] = {f"jaxkn-{i}": relative_error(s, reference) for i, s in scores.items()}
        result["projection"]["baseline"] = dict(facts_per_s=row["facts_per_s"],
                                                hours=projection_hours(row["facts_per_s"]))
    best = max((r for r in result["rows"] if r["impl"].startswith("jaxkn")), key=lambda r: r["facts_per_s"],
               default=None)
    if best is not None:
        result["projection"][f"{best['impl']} B={best['batch']}"] = dict(
            facts_per_s=best["facts_per_s"], hours=projection_hours(best["facts_per_s"]))
    print("\n".join(summary_lines(result)) + "\n\n" + markdown_table(result["rows"], baseline_s, peak))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
