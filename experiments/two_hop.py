"""The two-hop factual-recall study (METHOD.md §6) from the command line.

    python -m jaxkn.experiments.two_hop                              # SmolLM2 + built-in data -> two_hop_results/
    python -m jaxkn.experiments.two_hop --limit 5 --out /tmp/smoke   # a quick look
    python -m jaxkn.experiments.two_hop --model ckpt/ --dataset TFRKN.json --out runs/llama --resume

Stages: filter items to those whose single hops the model knows; knowledge neurons of both hops (integrated
gradients over the hop's paraphrases); KN scores of both hops on the two-hop question without CoT and with
zero-shot and few-shot CoT, against their single-hop levels; outcome table; interventions; knowledge conflict.
Results are written per item (crash-safe); `--resume` continues an interrupted run; the report (report.md,
summary.json, items.csv, figures/) is recomputed from the per-item files at the end.
"""

from __future__ import annotations

import argparse
import sys

from jaxkn.experiments.settings import COT_SETTINGS, SHARDING_RULES, StudyConfig

DEFAULT_OUT = "two_hop_results"


def parser() -> argparse.ArgumentParser:
    d = StudyConfig()
    p = argparse.ArgumentParser(prog="python -m jaxkn.experiments.two_hop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model", default=None, help="jaxkn checkpoint folder, HF model folder (config.json + safetensors) or .gguf "
                                    "file (default: the embedded SmolLM2-135M-Instruct)")
    a("--dataset", default=None, help="TFRKN.json, a jaxkn-built file or an MQuAKE file (default: built-in)")
    a("--limit", type=int, default=d.limit, help=f"items to study, counted after the filter (default {d.limit})")
    a("--screen", type=int, default=d.screen, help=f"screen at most SCREEN x LIMIT candidates (default {d.screen})")
    a("--cot", default=",".join(d.cot), help=f"comma-separated CoT settings from {COT_SETTINGS}; 'none' always "
                                              f"runs (default: all three)")
    a("--out", default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT}/)")
    a("--resume", action="store_true", help="continue a run in --out: done items and facts are not recomputed")
    a("--seed", type=int, default=d.seed, help="seeds candidate order, random controls, counterfactuals, bootstrap")
    a("--t", type=float, default=d.threshold_t, help=f"coarse KN threshold: Attr > t * max (default {d.threshold_t})")
    a("--p", type=float, default=d.share_p, help=f"refined KNs: coarse in >= p * n paraphrases (default {d.share_p})")
    a("--tau", type=float, default=d.tau, help=f"recalled: two-hop level >= tau * single-hop level (default {d.tau})")
    a("--site", default=d.site, choices=("product", "gate", "act"), help="neuron site (default product)")
    a("--baseline", default=d.baseline, choices=("zero", "amig"), help="IG baseline (default zero)")
    a("--steps", type=int, default=d.steps, help=f"IG integration points m (default {d.steps})")
    a("--quadrature", default=d.quadrature, choices=("left", "right", "linspace", "gauss_legendre"),
      help="IG quadrature rule (default left Riemann)")
    a("--queries-per-hop", type=int, default=d.queries_per_hop,
      help=f"paraphrases per hop used to find its neurons (default {d.queries_per_hop})")
    a("--cot-summary", default=d.cot_summary, choices=("max", "mean"), help="CoT level over positions (default max)")
    a("--answer-tokens", type=int, default=d.answer_tokens, help=f"tokens of a direct answer (default {d.answer_tokens})")
    a("--cot-tokens", type=int, default=d.cot_tokens, help=f"tokens of a CoT answer (default {d.cot_tokens})")
    a("--decode-mode", default=d.decode_mode, choices=("last", "cached", "all"),
      help="where interventions apply while decoding (METHOD §6.3; default last)")
    a("--enhance", type=float, default=d.enhance, help=f"enhancing factor (default {d.enhance})")
    a("--suppress", type=float, default=d.suppress, help=f"suppressing factor (default {d.suppress})")
    a("--batch-size", type=int, default=d.batch_size, help=f"prompts per batch (default {d.batch_size})")
    a("--bootstrap", type=int, default=d.bootstrap, help=f"bootstrap resamples (default {d.bootstrap})")
    a("--mesh", default=None, help="DATAxMODEL device mesh, e.g. 4x2: prompts split over DATA, params over MODEL "
                                   "(default: one device)")
    a("--sharding", default=d.sharding, choices=SHARDING_RULES,
      help=f"params over the mesh's MODEL axis (default {d.sharding}: fits any model; tensor needs heads, d_ff "
           f"and vocabulary divisible by MODEL)")
    a("--distributed", action="store_true", help="multi-host: each host studies its share, results merged once")
    return p


def settings_from_args(args) -> StudyConfig:
    return StudyConfig(
        model=args.model, dataset=args.dataset, limit=args.limit, screen=args.screen, seed=args.seed,
        cot=tuple(c.strip() for c in args.cot.split(",") if c.strip()), threshold_t=args.t, share_p=args.p,
        tau=args.tau, site=args.site, baseline=args.baseline, steps=args.steps, quadrature=args.quadrature,
        queries_per_hop=args.queries_per_hop, cot_summary=args.cot_summary, answer_tokens=args.answer_tokens,
        cot_tokens=args.cot_tokens, decode_mode=args.decode_mode, enhance=args.enhance, suppress=args.suppress,
        batch_size=args.batch_size, bootstrap=args.bootstrap, mesh=args.mesh, sharding=args.sharding)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as err:
        parser().error(str(err))
    from jaxkn.experiments.pipeline import run_study
    from jaxkn.experiments.store import ResultsFolderError

    try:
        run_study(settings, args.out, resume=args.resume, distributed=args.distributed,
                  log=lambda m: print(m, flush=True))
    except ResultsFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
