"""The two-hop factual-recall study (METHOD.md §6) from the command line.

    python -m jaxkn.experiments.two_hop                              # SmolLM2 + built-in data -> two_hop_results/
    python -m jaxkn.experiments.two_hop --limit 5 --out /tmp/smoke   # a quick look
    python -m jaxkn.experiments.two_hop --model ckpt/ --dataset TFRKN.json --out runs/llama --resume

Stages: filter items to those whose single hops the model knows; knowledge neurons of both hops (integrated
gradients over the hop's paraphrases); KN scores of both hops on the two-hop question without CoT and with
zero-shot and few-shot CoT, against their single-hop levels; outcome table; interventions; knowledge conflict.
Results are written per item (crash-safe); `--resume` continues an interrupted run; the report (report.md,
summary.json, items.csv, figures/) is recomputed from the per-item files at the end. `--help` lists every setting
with its default; `--config summary.json` replays a run's settings.
"""

from __future__ import annotations

import sys

from jaxkn.cli import add_debug_flag, run_cli
from jaxkn.errors import UserInputError
from jaxkn.experiments.cli import parser as study_parser
from jaxkn.experiments.cli import settings_from_args
from jaxkn.experiments.pipeline import run_study

DEFAULT_OUT = "two_hop_results"
PROG = "python -m jaxkn.experiments.two_hop"


class SettingsError(UserInputError):
    """A study setting that cannot be used (the message names the flag)."""


def parser():
    p = study_parser(prog=PROG, description=__doc__)
    add_debug_flag(p)
    return p


def _main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_from_args(args)  # every setting is checked here, before the dataset or model loads
    except ValueError as err:
        raise SettingsError(str(err)) from None
    run_study(settings, args.out or DEFAULT_OUT, resume=args.resume, distributed=args.distributed,
              log=lambda m: print(m, flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The study's command line: user errors end in one message and exit status 2 (`--debug`: the traceback)."""
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
