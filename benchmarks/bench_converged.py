"""Time to a *converged* attribution: jaxkn's converged mode against the PyTorch loop and captum at the uniform
rule that reaches the same completeness (issue 17, item 1).

A converged attribution (METHOD.md §3) has completeness error |sum_i Attr(l, i) - (P(a) - P(b))| at most the
tolerance on every layer of every prompt. In one process this script

1. takes N facts x Q queries with the study's own prompts (SmolLM2: the facts the committed default run
   attributed, in its order: hop 1 then hop 2 of each kept item, the first Q paraphrases of each hop as
   3-shot prompts, `format_prompt(query, COT_STYLES["none"])`, the filter's spoken answer as the target, as
   `experiments/fact_stage.py` does) and attributes the FIRST answer token of each query (one row per
   query). `--model tiny` uses a random 3-layer LLaMA with random-token prompts of a fixed length (no
   tokenizer: the built-in dataset cannot be spelled in a 128-token random vocabulary) and the model's own
   next token as the answer;
2. times jaxkn's converged mode exactly as the study runs it: the study's default `AttributionConfig`
   (`jaxkn.experiments.settings.StudyConfig().attribution`, read from the code), the Q queries of a fact in
   one `attribute_ids` call, every fact timed after an untimed warm-up (the first fact of each padded prompt
   length); per fact seconds (median, mean) with JAX's compile/trace seconds that still fell inside a timed
   call (a refinement round of a new shape) left out and reported, completeness error and points per layer;
3. finds m*, the smallest uniform left-Riemann point count (the rule of the PyTorch loop and of captum's
   `riemann_left`) with every layer of every prompt within the tolerance, doubling from 20 up to
   `--max-uniform`, each step on the layers still failing (jaxkn's fast path: completeness of a fixed rule
   is a property of the rule, not of the implementation); then attributes all layers of the first
   `--uniform-facts` facts at m* (compile timed apart), for the agreement and KN-set comparisons;
4. times the PyTorch loop (`torch_baseline.attribute_fact`) and captum `LayerIntegratedGradients`
   (`riemann_left`) at m* on `--baseline-layers` of the first `--baseline-queries` queries of fact 0 (both
   batch the m copies, `--baseline-batch` at a time) and scales the measured seconds per layer to L layers x
   Q queries (each layer of these baselines is one full forward/backward of m copies, so a layer costs the
   same whichever it is: the per-layer times are printed to check that);
5. prints a Markdown table (and `--json PATH`): rule, seconds per fact, ratio to jaxkn converged,
   completeness reached, relative error (METHOD.md §9) and coarse KN sets (t = 0.2, ignoring neurons within
   1e-3 * max of the threshold) against jaxkn converged, and peak RSS per phase.

If no m <= --max-uniform reaches the tolerance, m* is reported as not reached and the baselines and the
uniform comparison run at the cap instead (said so in the table).

    # SmolLM2 on 2 quiet CPU cores, ~11-14 minutes (estimated, not yet measured end to end: m* = 160 or 320
    # expected, as layer 0 of these 16 prompts reaches 0.0058 at left m = 160; more when the persistent
    # compilation cache is cold):
    python benchmarks/bench_converged.py --model smollm2 --facts 4 --queries 4 --baseline-layers 0,29 --json c.json
    # the CI smoke run (tiny random model, seconds):
    python benchmarks/bench_converged.py --model tiny --facts 2 --queries 2 --max-uniform 80
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

import jaxkn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_baseline  # noqa: E402

from jaxkn.attribution import AttributionConfig, attribute_batch, attribute_ids, make_batch  # noqa: E402
from jaxkn.neurons import coarse_mask  # noqa: E402
from jaxkn.runtime import enable_compilation_cache  # noqa: E402

START_M = 20  # the doubling of the uniform rule starts at the fixed-rule default (METHOD.md §3)
THRESHOLD_T = 0.2  # coarse KN threshold used for the set comparisons (the study's default t)


def study_attribution() -> AttributionConfig:
    """The study's default (converged) AttributionConfig, read from the study's own settings."""
    from jaxkn.experiments.settings import StudyConfig

    return StudyConfig().attribution


def default_run_dir() -> Path:
    import jaxkn.experiments

    return Path(jaxkn.experiments.__file__).resolve().parent / "default_run"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", choices=("smollm2", "tiny"))
    p.add_argument("--facts", type=int, default=4, help="facts, all timed (fact 0 runs once more before, untimed: the warm-up)")
    p.add_argument("--queries", type=int, default=4, help="queries per fact (the study's queries_per_hop)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="completeness tolerance in probability units (default: the study preset's)")
    p.add_argument("--max-uniform", type=int, default=2560, help="largest uniform left-Riemann m tried")
    p.add_argument("--uniform-facts", type=int, default=1,
                   help="facts attributed on all layers at m* (timed; for agreement and KN sets)")
    p.add_argument("--uniform-queries", type=int, default=None,
                   help="queries of each of those facts attributed on all layers at m* (default: all; fewer "
                        "are timed and scaled to --queries per fact, said so in the table)")
    p.add_argument("--baseline-layers", default="0", help="layers the PyTorch baselines are timed on")
    p.add_argument("--baseline-queries", type=int, default=1, help="queries of fact 0 the baselines run on")
    p.add_argument("--baseline-batch", type=int, default=16,
                   help="scaled copies per torch batch (the loop's points per batch, captum's internal_batch_size)")
    p.add_argument("--no-captum", action="store_true", help="skip captum")
    p.add_argument("--facts-from", default=None,
                   help="smollm2: a study run folder (filter.json, filter_cache.json) whose kept items give the "
                        "facts (default: the committed default run), or 'builtin' for the built-in dataset in "
                        "the study's seeded order without the filter")
    p.add_argument("--prompt-len", type=int, default=12, help="tiny: tokens per random prompt")
    p.add_argument("--seed", type=int, default=0, help="tiny: weights and prompts")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.baseline_layers = [int(x) for x in args.baseline_layers.split(",") if x.strip()]
    if args.facts < 1 or args.queries < 1:
        p.error("--facts and --queries must be >= 1")
    if args.max_uniform < START_M:
        p.error(f"--max-uniform must be >= {START_M}")
    if not args.baseline_layers:
        p.error("--baseline-layers must name at least one layer, e.g. 0 or 0,29")
    if not 1 <= args.baseline_queries <= args.queries:
        p.error("--baseline-queries must lie in [1, --queries]")
    if not 1 <= args.uniform_facts <= args.facts:
        p.error("--uniform-facts must lie in [1, --facts]")
    args.uniform_queries = args.queries if args.uniform_queries is None else args.uniform_queries
    if not args.baseline_queries <= args.uniform_queries <= args.queries:
        p.error("--uniform-queries must lie in [--baseline-queries, --queries] (the baselines' parity check "
                "compares their queries at the same rule)")
    if args.baseline_batch < 1:
        p.error("--baseline-batch must be >= 1")
    return args


# ---- memory and compile accounting ------------------------------------------------------------------------

def reset_peak() -> None:
    """Resets the kernel's peak-RSS mark (VmHWM) of this process, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling (its `/jax/core/compile/` events) while active."""

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_):
        if event.startswith("/jax/core/compile/"):
            self.seconds += duration

    def close(self):
        jax.monitoring.unregister_event_duration_listener(self._on_event)


# ---- models and facts -------------------------------------------------------------------------------------

def load_models(args):
    """(cfg, params, tokenizer or None, torch model holding the same weights, description)."""
    import torch

    if args.model == "tiny":
        import bench_7b
        import shapes

        from jaxkn.model import init_params

        cfg = shapes.jaxkn_config("tiny")
        params = init_params(cfg, jax.random.PRNGKey(args.seed))
        model = bench_7b.build_torch_model("tiny", "float32", cfg, params, "cpu")
        return cfg, params, None, model, "tiny random LLaMA (benchmarks/shapes.py), float32"
    import transformers

    from jaxkn.convert.loading import load_default_model
    from jaxkn.convert.smollm2 import gguf_path

    cfg, params, tok = load_default_model()
    path = gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    model.requires_grad_(False)
    return cfg, params, tok, model, "SmolLM2-135M-Instruct, float32"


def study_facts(tok, n_facts: int, n_queries: int, source: str | None) -> tuple[list[dict], str]:
    """The first `n_facts` unique facts the study attributes, with the first `n_queries` queries of each."""
    from jaxkn.attribution import answer_token_ids
    from jaxkn.data import COT_STYLES, builtin_items, format_prompt, spoken_answer

    items = builtin_items()
    run = default_run_dir() if source is None else (None if source == "builtin" else Path(source))
    if run is not None and (run / "filter.json").is_file():
        by_id = {it.case_id: it for it in items}
        order = [by_id[c] for c in json.loads((run / "filter.json").read_text())["kept"]]
        cache = run / "filter_cache.json"
        spoken = json.loads(cache.read_text()) if cache.is_file() else {}
        origin = f"the kept items of {run} (its filter order; targets: the filter's spoken answers)"
    else:
        if run is not None:
            raise SystemExit(f"--facts-from {run}: no filter.json there")
        order = [items[i] for i in np.random.default_rng(0).permutation(len(items))]
        spoken = {}
        origin = "the built-in dataset in the study's seeded order (seed 0), unfiltered"
    facts, seen = [], set()
    for it in order:
        for h in (1, 2):
            hop = it.hop(h)
            if tuple(hop.triple_id) in seen or len(hop.queries) < n_queries:
                continue
            seen.add(tuple(hop.triple_id))
            texts = [format_prompt(q, COT_STYLES["none"]) for q in hop.queries[:n_queries]]
            targets = [spoken_answer(spoken[t], hop.answer, hop.aliases) if t in spoken else hop.answer
                       for t in texts]
            pairs = [answer_token_ids(tok, t, target) for t, target in zip(texts, targets)]
            facts.append(dict(name=" / ".join(map(str, hop.triple_label)), queries=list(hop.queries[:n_queries]),
                              targets=targets, prompts=[p for p, _ in pairs], answers=[a[:1] for _, a in pairs],
                              answer_tokens=[len(a) for _, a in pairs]))
            if len(facts) == n_facts:
                return facts, origin
    raise SystemExit(f"only {len(facts)} facts with {n_queries} queries found; ask for fewer")


def tiny_facts(cfg, params, n_facts: int, n_queries: int, prompt_len: int, seed: int) -> tuple[list[dict], str]:
    import bench_7b

    prompts, answers = bench_7b.make_facts(cfg, params, n_facts * n_queries, prompt_len, seed)
    facts = [dict(name=f"random fact {f}", prompts=prompts[f * n_queries:(f + 1) * n_queries],
                  answers=answers[f * n_queries:(f + 1) * n_queries], answer_tokens=[1] * n_queries)
             for f in range(n_facts)]
    return facts, f"random token prompts of {prompt_len} tokens, answer = the model's own next token (no tokenizer)"


# ---- jaxkn ------------------------------------------------------------------------------------------------

def as_np(attr) -> dict:
    return dict(scores=np.asarray(attr.scores, np.float64), error=np.asarray(attr.completeness_error, np.float64),
                points=np.asarray(attr.points_per_layer), flagged=np.asarray(attr.flagged))


def run_converged(params, cfg, facts, config, clock) -> dict:
    """Converged mode per fact (Q queries in one call), every fact timed after an untimed warm-up on the first
    fact of each padded prompt length (so the first-round program is compiled before timing). Refinement
    rounds whose shape the warm-up did not meet still compile inside a timed call: those seconds (JAX's trace,
    lower and compile events) are recorded, and the net seconds per fact leave them out."""
    reset_peak()
    warm, seen = [], set()
    for fact in facts:
        shape = make_batch(cfg, fact["prompts"], fact["answers"]).tokens.shape
        if shape not in seen:
            seen.add(shape)
            t0 = time.perf_counter()
            jax.block_until_ready(attribute_ids(params, cfg, fact["prompts"], fact["answers"], config).scores)
            warm.append(time.perf_counter() - t0)
            print(f"  converged warm-up ({fact['name']}, padded batch {shape}): {warm[-1]:.1f} s", file=sys.stderr,
                  flush=True)
    times, compile_in, out = [], [], []
    for fact in facts:
        clock.seconds = 0.0
        t0 = time.perf_counter()
        attr = attribute_ids(params, cfg, fact["prompts"], fact["answers"], config)
        jax.block_until_ready(attr.scores)
        times.append(time.perf_counter() - t0)
        compile_in.append(min(clock.seconds, times[-1]))
        out.append(as_np(attr))
        print(f"  converged: {fact['name']}: {times[-1]:.2f} s (compile/trace inside: {compile_in[-1]:.2f} s), "
              f"max error {out[-1]['error'].max():.2e}, points per layer {out[-1]['points'].max(0).tolist()}",
              file=sys.stderr, flush=True)
    error = np.concatenate([o["error"] for o in out])  # [N*Q, L]
    points = np.concatenate([o["points"] for o in out])
    net = [t - c for t, c in zip(times, compile_in)]
    return dict(warmup_s=warm, seconds=times, compile_inside_s=compile_in, net_seconds=net,
                s_per_fact_median=statistics.median(net), s_per_fact_mean=statistics.fmean(net),
                s_per_fact_median_with_compile=statistics.median(times),
                scores=np.concatenate([o["scores"] for o in out]), error=error, points=points,
                error_per_layer=error.max(0).tolist(), points_per_layer=points.max(0).tolist(),
                points_min=int(points.min()), points_max=int(points.max()),
                flagged=int(sum(o["flagged"].sum() for o in out)), peak_mib=peak_mib())


def uniform_config(base: AttributionConfig, m: int, layers=None) -> AttributionConfig:
    """Left Riemann with m points, the study's other settings (site, baseline, ...), no tolerance."""
    return dataclasses.replace(base, quadrature="left", steps=m, tolerance=None, max_points_per_layer=m,
                               layers=None if layers is None else tuple(int(i) for i in layers))


def find_uniform_m(params, cfg, facts, base: AttributionConfig, tolerance: float, max_m: int) -> dict:
    """Doubles m from 20 on the layers where some prompt is still above the tolerance (all prompts at once)."""
    reset_peak()
    prompts = [p for f in facts for p in f["prompts"]]
    answers = [a for f in facts for a in f["answers"]]
    failing, m, steps, m_star = list(range(cfg.n_layers)), START_M, [], None
    while m <= max_m:
        t0 = time.perf_counter()
        attr = attribute_ids(params, cfg, prompts, answers, uniform_config(base, m, failing))
        error = np.asarray(attr.completeness_error, np.float64).max(0)  # [len(failing)], max over prompts
        above = [layer for layer, e in zip(failing, error) if not e <= tolerance]
        steps.append(dict(m=m, checked_layers=list(failing), max_error=float(error.max()),
                          error_per_layer={int(k): float(e) for k, e in zip(failing, error)}, above=above,
                          seconds=time.perf_counter() - t0))
        print(f"  uniform left m={m}: max error {error.max():.3e} over layers {_ranges(failing)}; "
              f"above {tolerance:g}: {_ranges(above) or 'none'} ({steps[-1]['seconds']:.1f} s)",
              file=sys.stderr, flush=True)
        if not above:
            m_star = m
            break
        failing, m = above, 2 * m
    return dict(steps=steps, m_star=m_star, m_used=m_star if m_star is not None else steps[-1]["m"],
                reached=m_star is not None, peak_mib=peak_mib())


def run_uniform_all_layers(params, cfg, facts, config) -> dict:
    """All layers at one uniform rule, fact by fact; compiling (once per padded batch shape) is timed apart."""
    reset_peak()
    programs, compile_s, times, out = {}, 0.0, [], []
    for fact in facts:
        batch = make_batch(cfg, fact["prompts"], fact["answers"])
        shape = (batch.tokens.shape, batch.answer_tokens.shape)
        if shape not in programs:
            t0 = time.perf_counter()
            programs[shape] = jax.jit(attribute_batch, static_argnames=("cfg", "config")).lower(
                params, batch, cfg=cfg, config=config).compile()
            compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        attr = programs[shape](params, batch)
        jax.block_until_ready(attr.scores)
        times.append(time.perf_counter() - t0)
        out.append(as_np(attr))
        print(f"  uniform left m={config.steps}, all layers: {fact['name']}: {times[-1]:.2f} s, "
              f"max error {out[-1]['error'].max():.2e}", file=sys.stderr, flush=True)
    error = np.concatenate([o["error"] for o in out])
    return dict(compile_s=compile_s, seconds=times, s_per_fact_median=statistics.median(times),
                s_per_fact_mean=statistics.fmean(times), scores=np.concatenate([o["scores"] for o in out]),
                error=error, error_per_layer=error.max(0).tolist(), peak_mib=peak_mib())


# ---- the PyTorch baselines --------------------------------------------------------------------------------

def torch_probabilities(model, prompt, gold: int, layers, site: str) -> tuple[float, list[float]]:
    """P(gold) of the unmodified model and, per layer, with that layer's site at the predicting position zero."""
    import torch

    ids, pos = torch.tensor([list(prompt)]), len(prompt) - 1

    def prob():
        with torch.no_grad():
            return float(torch.softmax(model(ids).logits[0, pos].double(), -1)[gold])

    def zero(x):
        x = x.clone()
        x[:, pos] = 0
        return x

    p_base = []
    for layer in layers:
        with torch_baseline.site_hook(model, layer, site, zero):
            p_base.append(prob())
    return prob(), p_base


def run_baseline(fn, model, queries, layers, m: int, batch: int, site: str, batch_kw: str) -> dict:
    """One call per (query, layer), timed; scores [q, len(layers), F] and completeness from torch forwards."""
    kw = {batch_kw: batch}
    if fn is torch_baseline.attribute_fact:
        kw["site"] = site
    fn(model, queries[0][0], queries[0][1], steps=2, quadrature="left", layers=layers[:1], **kw)  # warm-up, untimed
    reset_peak()
    scores = np.zeros((len(queries), len(layers), model.config.intermediate_size))
    times = np.zeros((len(queries), len(layers)))
    error = np.zeros((len(queries), len(layers)))
    for qi, (prompt, answer) in enumerate(queries):
        p_actual, p_base = torch_probabilities(model, prompt, answer[0], layers, site)
        for li, layer in enumerate(layers):
            t0 = time.perf_counter()
            scores[qi, li] = fn(model, prompt, answer, steps=m, quadrature="left", layers=[layer], **kw)[0]
            times[qi, li] = time.perf_counter() - t0
            error[qi, li] = abs(scores[qi, li].sum() - (p_actual - p_base[li]))
            print(f"    query {qi} layer {layer}: {times[qi, li]:.2f} s, completeness error {error[qi, li]:.2e}",
                  file=sys.stderr, flush=True)
    return dict(scores=scores, seconds=times.tolist(), s_per_layer=float(times.mean()),
                s_per_layer_by_layer={int(layer): float(times[:, li].mean()) for li, layer in enumerate(layers)},
                error=error, error_max=float(error.max()), peak_mib=peak_mib())


# ---- comparisons ------------------------------------------------------------------------------------------

def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """METHOD.md §9: max |difference| / max |reference| over the compared tensor."""
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def set_agreement(ref: np.ndarray, other: np.ndarray, t: float = THRESHOLD_T) -> tuple[float, bool]:
    """Coarse sets (t * max over the given [L, F] tensor) of one prompt: Jaccard, and whether they are equal
    ignoring neurons whose reference attribution lies within 1e-3 * max of the threshold (METHOD.md §9)."""
    a, b = coarse_mask(ref, t), coarse_mask(other, t)
    union = (a | b).sum()
    jaccard = float((a & b).sum() / union) if union else 1.0
    top = ref.max()
    clear = np.abs(ref - t * top) > 1e-3 * abs(top)
    return jaccard, bool(np.array_equal(a[clear], b[clear]))


def compare(ref: np.ndarray, other: np.ndarray) -> dict:
    """Per prompt (axis 0) of two [n, L, F] tensors: relative error (max over prompts) and coarse sets."""
    sets = [set_agreement(r, o) for r, o in zip(ref, other)]
    return dict(relative_error=max(relative_error(o, r) for r, o in zip(ref, other)),
                jaccard=[j for j, _ in sets], jaccard_median=float(np.median([j for j, _ in sets])),
                sets_equal=[s for _, s in sets], all_sets_equal=all(s for _, s in sets))


# ---- reporting --------------------------------------------------------------------------------------------

def _ranges(layers) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    layers, out, i = sorted(layers), [], 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and layers[j + 1] == layers[j] + 1:
            j += 1
        out.append(str(layers[i]) if i == j else f"{layers[i]}-{layers[j]}")
        i = j + 1
    return ",".join(out)


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown_table(rows: list[dict]) -> str:
    head = ("| implementation | rule | s/fact | x jaxkn converged | completeness max | rel. err vs jaxkn converged "
            "| coarse sets vs converged (median Jaccard; equal) | peak MiB | measured on |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        sets = "-" if r["jaccard_median"] is None else f"{r['jaccard_median']:.2f}; {r['sets_equal']}"
        lines.append("| " + " | ".join([
            r["impl"], r["rule"], _f(r["s_per_fact"], ".4g"), _f(r["ratio"], ".1f"), _f(r["completeness"], ".2e"),
            _f(r["rel_err"], ".2e"), sets, _f(r["peak_mib"], ".0f"), r["measured"]]) + " |")
    return "\n".join(lines)


def uniform_table(search: dict, tolerance: float) -> str:
    lines = [f"| left m | max completeness error | layers checked | layers above {tolerance:g} |", "|---|---|---|---|"]
    for s in search["steps"]:
        lines.append(f"| {s['m']} | {s['max_error']:.3e} | {_ranges(s['checked_layers'])} "
                     f"| {_ranges(s['above']) or 'none'} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Runs the benchmark, prints the report and returns the results as a dict."""
    args = parse_args(argv)
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    enable_compilation_cache()
    clock = CompileClock()
    cfg, params, tok, model, described = load_models(args)
    bad = [i for i in args.baseline_layers if not 0 <= i < cfg.n_layers]
    if bad:
        raise SystemExit(f"--baseline-layers {bad}: the model has layers 0..{cfg.n_layers - 1}")
    base = study_attribution()
    tolerance = base.tolerance if args.tolerance is None else args.tolerance
    if tolerance is None:
        raise SystemExit("the study's default attribution has no tolerance; pass --tolerance")
    converged_cfg = dataclasses.replace(base, tolerance=tolerance)
    if base.baseline != "zero" or base.baseline_form != "difference" or base.site not in torch_baseline.SITES:
        raise SystemExit(f"this benchmark compares the zero-baseline difference form at sites "
                         f"{torch_baseline.SITES}; the study's config is {base}")
    if args.model == "tiny":
        facts, origin = tiny_facts(cfg, params, args.facts, args.queries, args.prompt_len, args.seed)
    else:
        facts, origin = study_facts(tok, args.facts, args.queries, args.facts_from)
    lengths = [len(p) for f in facts for p in f["prompts"]]
    meta = dict(model=described, n_layers=cfg.n_layers, d_ff=cfg.d_ff, facts=args.facts, queries=args.queries,
                fact_source=origin, target="the first answer token of each query (one row per query)",
                prompt_tokens=lengths, answer_tokens=[n for f in facts for n in f["answer_tokens"]],
                tolerance=tolerance, converged_config=converged_cfg.to_dict(), jax=jax.__version__,
                jaxkn_path=str(Path(jaxkn.__file__).resolve().parent), platform=jax.default_backend(),
                torch=torch.__version__, transformers=transformers.__version__,
                torch_threads=args.threads, cpus=os.cpu_count(), command="python " + " ".join(sys.argv))
    print(f"{described}, {cfg.n_layers} layers; {args.facts} facts x {args.queries} queries from {origin}; "
          f"attributing the first answer token of each query (one row per query)")
    print(f"prompt lengths (tokens): {lengths}; answer lengths (tokens, only the first attributed): "
          f"{meta['answer_tokens']}")
    print(f"jaxkn converged config (the study's default, tolerance {tolerance:g}): {converged_cfg}")
    for f in facts[:args.facts]:
        print(f"  fact {f['name']!r}: " + (f"targets {f['targets']}" if "targets" in f else "random prompts"))

    converged = run_converged(params, cfg, facts, converged_cfg, clock)
    search = find_uniform_m(params, cfg, facts, base, tolerance, args.max_uniform)
    m = search["m_used"]
    n_u = args.uniform_queries
    uni_facts = [dict(f, prompts=f["prompts"][:n_u], answers=f["answers"][:n_u]) for f in facts[: args.uniform_facts]]
    uni = run_uniform_all_layers(params, cfg, uni_facts, uniform_config(base, m))
    uni["s_per_fact"] = uni["s_per_fact_median"] * args.queries / n_u  # rows scale linearly with queries
    clock.close()

    n_q = args.baseline_queries
    queries = list(zip(facts[0]["prompts"][:n_q], facts[0]["answers"][:n_q]))
    layers = args.baseline_layers
    pos = [base.layer_indices(cfg.n_layers).index(layer) for layer in layers]
    conv_ref = converged["scores"][:n_q][:, pos]
    uni_ref = uni["scores"][:n_q][:, pos]
    baselines = {}
    impls = [("PyTorch loop", torch_baseline.attribute_fact, "points_per_batch")]
    if not args.no_captum:
        impls.append(("captum LIG", torch_baseline.captum_attribute_fact, "internal_batch_size"))
    for name, fn, kw in impls:
        print(f"  {name} at left m={m}, layers {layers}, {n_q} query(ies):", file=sys.stderr, flush=True)
        b = run_baseline(fn, model, queries, layers, m, args.baseline_batch, base.site, kw)
        b["s_per_fact"] = b["s_per_layer"] * cfg.n_layers * args.queries
        b["vs_converged"] = compare(conv_ref, b["scores"])
        b["parity_vs_jaxkn_uniform"] = relative_error(uni_ref, b["scores"])  # same rule: jaxkn vs the baseline
        baselines[name] = b

    conv_uni = np.concatenate([converged["scores"][f * args.queries: f * args.queries + n_u]
                               for f in range(args.uniform_facts)])
    uni_vs_conv = compare(conv_uni, uni["scores"])
    rule_m = f"left m={m}" + ("" if search["reached"] else f" (tolerance NOT reached within m <= {args.max_uniform})")
    measured = (f"layers {_ranges(layers)} of {n_q} query(ies) of fact 0, scaled to {cfg.n_layers} layers x "
                f"{args.queries} queries")
    rows = [dict(impl="jaxkn converged", rule=f"converged, {converged['points_min']}-{converged['points_max']} "
                 "points per layer", s_per_fact=converged["s_per_fact_median"], ratio=1.0,
                 completeness=float(converged["error"].max()), rel_err=None, jaccard_median=None, sets_equal=None,
                 peak_mib=converged["peak_mib"], measured=f"{args.facts} facts x {args.queries} queries, all layers "
                 "(median s/fact, compile/trace inside the timed calls left out)"),
            dict(impl="jaxkn fast, uniform", rule=rule_m, s_per_fact=uni["s_per_fact"],
                 ratio=uni["s_per_fact"] / converged["s_per_fact_median"],
                 completeness=float(uni["error"].max()), rel_err=uni_vs_conv["relative_error"],
                 jaccard_median=uni_vs_conv["jaccard_median"], sets_equal=uni_vs_conv["all_sets_equal"],
                 peak_mib=uni["peak_mib"], measured=f"{args.uniform_facts} fact(s) x {n_u} queries, all layers"
                 + ("" if n_u == args.queries else f", scaled to {args.queries} queries")
                 + f" (compile {uni['compile_s']:.1f} s apart)")]
    for name, b in baselines.items():
        rows.append(dict(impl=name, rule=rule_m, s_per_fact=b["s_per_fact"],
                         ratio=b["s_per_fact"] / converged["s_per_fact_median"], completeness=b["error_max"],
                         rel_err=b["vs_converged"]["relative_error"], jaccard_median=b["vs_converged"]["jaccard_median"],
                         sets_equal=b["vs_converged"]["all_sets_equal"], peak_mib=b["peak_mib"], measured=measured))

    lines = ["", f"uniform left Riemann, all {len(lengths)} prompts (the smallest m with every layer of every prompt "
             f"<= {tolerance:g}: {'m* = ' + str(search['m_star']) if search['reached'] else 'not reached'}):", "",
             uniform_table(search, tolerance), "",
             f"jaxkn converged: {converged['s_per_fact_median']:.3g} s/fact median, "
             f"{converged['s_per_fact_mean']:.3g} mean over {args.facts} facts, compile/trace apart (with it: "
             f"{converged['s_per_fact_median_with_compile']:.3g} median; {sum(converged['compile_inside_s']):.1f} s "
             f"of compile/trace fell inside timed calls; warm-up calls "
             f"{', '.join(f'{w:.1f}' for w in converged['warmup_s'])} s); "
             f"{converged['flagged']} (prompt, layer) flagged",
             "  max completeness error per layer: " + " ".join(f"{e:.1e}" for e in converged["error_per_layer"]),
             "  points per layer (max over prompts): " + " ".join(map(str, converged["points_per_layer"])),
             f"jaxkn uniform left m={m}, all layers: max completeness error per layer: "
             + " ".join(f"{e:.1e}" for e in uni["error_per_layer"])]
    for name, b in baselines.items():
        lines.append(f"{name}: s per layer by layer {json.dumps(b['s_per_layer_by_layer'])}; seconds per fact = "
                     f"{b['s_per_layer']:.3g} s/layer x {cfg.n_layers} layers x {args.queries} queries "
                     f"(measured on {measured}); parity with jaxkn at the same rule (left m={m}): relative error "
                     f"{b['parity_vs_jaxkn_uniform']:.2e}")
    lines += ["", markdown_table(rows),
              "", "rel. err: METHOD.md §9, max|diff| / max|jaxkn converged| per prompt, max over prompts; coarse sets: "
              f"t = {THRESHOLD_T} of each prompt's max over the compared layers (baselines: only the measured layers), "
              "equal ignoring neurons within 1e-3 * max of the threshold; peak MiB: process RSS peak within the phase"]
    report = "\n".join(lines)
    print(report, flush=True)

    result = dict(meta=meta, rows=rows, table=markdown_table(rows), uniform_search=search,
                  converged={k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in converged.items()
                             if k != "scores"},
                  uniform={k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in uni.items()
                           if k != "scores"},
                  uniform_vs_converged=uni_vs_conv,
                  baselines={n: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in b.items()
                                 if k != "scores"} for n, b in baselines.items()})
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
