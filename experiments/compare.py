"""Two runs of the study side by side, claim by claim: what changed between them and under which settings.

    python -m jaxkn.experiments.compare experiments/paper_run experiments/converged_run_24 --out experiments/COMPARISON.md

Reads each folder's summary.json (nothing is recomputed) and writes a markdown table: for every claim, each run's
verdict on each score (D, R) and CoT summary (max, mean) with the null it was tested against; then the settings
that differ and the fact-level numbers that explain most differences (IG completeness, KN set sizes, shared
neurons). The "why" is the reader's (or the committing author's) to write below the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxkn.cli import run_cli
from jaxkn.errors import UserInputError

CLAIMS = {"1_recall_drops": "1. recall drops in two-hop questions",
          "2_errors_with_recall_failure": "2. over a third of errors come with a recall failure",
          "3_cot_raises_recall": "3. CoT raises recall", "4_enhance_helps_suppress_hurts": "4. enhance helps, suppress hurts",
          "5_conflict_raises_recall": "5. conflict raises recall"}
SCORES = ("specific", "R")
SUMMARIES = ("max", "mean")


def read_summary(folder: str | Path) -> dict:
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise UserInputError(f"{folder}: no summary.json (is it a results folder of the study?)")
    return json.loads(path.read_text(encoding="utf-8"))


def _cell(verdict: dict, score: str, summary: str) -> str:
    cell = verdict.get("by_score", {}).get(score, {}).get(summary)
    if not cell:
        return "n/a"
    return f"{cell.get('verdict', 'n/a')} (vs {cell.get('null', 'none')})"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def compare(a: dict, b: dict, name_a: str, name_b: str) -> str:
    """The comparison markdown of two summaries."""
    lines = [f"# {name_a} vs {name_b}: claim by claim", "",
             f"`{name_a}`: preset {a['settings'].get('preset')!r}; `{name_b}`: preset {b['settings'].get('preset')!r}.",
             "Each cell: the verdict, and the null it was tested against.", ""]
    for key, title in CLAIMS.items():
        va, vb = a.get("verdicts", {}).get(key, {}), b.get("verdicts", {}).get(key, {})
        lines += [f"## Claim {title}", "", f"| score, CoT summary | {name_a} | {name_b} |", "|---|---|---|"]
        for score in SCORES:
            for summary in SUMMARIES:
                lines.append(f"| {score}, {summary} | {_cell(va, score, summary)} | {_cell(vb, score, summary)} |")
        lines.append("")
    fa, fb = _flat(a["settings"]), _flat(b["settings"])
    changed = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and k not in ("mesh", "sharding"))
    lines += ["## Settings that differ", "", f"| setting | {name_a} | {name_b} |", "|---|---|---|"]
    lines += [f"| {k} | {fa.get(k)} | {fb.get(k)} |" for k in changed] + [""]
    lines += ["## Facts", "", f"| | {name_a} | {name_b} |", "|---|---|---|"]
    for label, getter in (
            ("items studied", lambda s: s["filter"]["studied"]),
            ("unique facts", lambda s: s["facts"].get("unique")),
            ("facts with an empty KN set", lambda s: s["facts"].get("empty_kn")),
            ("IG completeness error, max", lambda s: s.get("attribution", {}).get("completeness", {}).get("max")),
            ("IG completeness error, median", lambda s: s.get("attribution", {}).get("completeness", {}).get("median")),
            ("flagged (query, layer) pairs", lambda s: s.get("attribution", {}).get("completeness", {}).get("flagged_layers")),
            ("shared neurons", lambda s: len(s.get("neurons", {}).get("shared", []))),
            ("mean KN set size, hop 1 / hop 2", lambda s: s["numbers"].get("kn_size_mean"))):
        try:
            va, vb = getter(a), getter(b)
        except (KeyError, TypeError):
            va = vb = "n/a"
        lines.append(f"| {label} | {_fmt(va)} | {_fmt(vb)} |")
    return "\n".join(lines + [""])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return " / ".join(_fmt(x) for x in v.values())
    return str(v)


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxkn.experiments.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="a results folder (summary.json inside)")
    p.add_argument("b", help="another results folder")
    p.add_argument("--out", default=None, help="write the markdown here (default: print it)")
    args = p.parse_args(argv)
    text = compare(read_summary(args.a), read_summary(args.b), Path(args.a).name, Path(args.b).name)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv, prog="python -m jaxkn.experiments.compare")


if __name__ == "__main__":
    sys.exit(main())
