"""The study's report: items.csv / items.parquet, facts.parquet, summary.json, report.md and PNG figures.

Input contract (the compute stages build it): `table`, one row per item, columns
- case_id, relation1, relation2, answer, bridge, fact1, fact2 (fact keys; items sharing a fact are one cluster);
- kn{h}, refined{h}, shared_in{h}; single_R{h}, single_paper{h}, single_random{h}, single_matched{h}, single_D{h};
- `{c}_h{h}_{stat}` and `{c}_h{h}_{stat}_mean` for each CoT setting c, hop h and stat in R, paper, D, random,
  matched, wrong; {c}_correct, {c}_answer, none_says_bridge;
- base_p, base_correct, `{t}_{null}_{kind}_p` / `_correct` (t: hop1, hop2, both; null: own, random, matched,
  wrong, shared; kind: enhance, suppress);
- conflict{h}_R, conflict{h}_D, conflict{h}_matched, conflict{h}_follows, conflict{h}_counterfactual;
NaN where a hop has no KNs or a condition does not exist. `facts_summary`: unique facts, empty sets, the shared
neurons and their rule, KN counts per layer, IG completeness per layer, a few heatmaps (see `write_report`).

Verdicts (`verdicts`): a cell says "reproduced" only when its 95% interval excludes no effect in the paper's
direction AND the effect beats the null the claim is tested against (wrong-fact for the specific score, whose
D already subtracts it; matched random for R); "not beyond the ... null" when the effect shows but the null shows
it as well; "too few to tell" below 10 items; "inconclusive" when the interval includes no effect.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from jaxkn.experiments.analysis import HEADLINE_NULL, SCORES, SUMMARIES, analyse
from jaxkn.experiments.figures import draw_all, heatmap_index
from jaxkn.experiments.report_claims import claim_sections
from jaxkn.experiments.report_format import NULL_WORDS
from jaxkn.experiments.results import StudySummary, to_json
from jaxkn.experiments.settings import StudyConfig
from jaxkn.experiments.stats import MIN_N, TOO_FEW

PROG = "python -m jaxkn.experiments.two_hop"


def regenerate_command(settings, root) -> str:
    """The command that reproduces this run: the plain one for the defaults, else a replay of its settings."""
    defaults = type(settings)()
    same = {k: v for k, v in settings.to_dict().items() if k not in ("mesh", "sharding")} == {
        k: v for k, v in defaults.to_dict().items() if k not in ("mesh", "sharding")}
    if same:
        return f"{PROG} --out {root}"
    return f"{PROG} --config {root}/summary.json --out NEW_FOLDER"
CLAIMS = ("1_recall_drops", "2_errors_with_recall_failure", "3_cot_raises_recall",
          "4_enhance_helps_suppress_hurts", "5_conflict_raises_recall")
NO_SIGNAL = "not beyond the wrong-fact null (no fact-specific signal on single hops)"


def _side(ci: dict | None, sign: int) -> str:
    """"few", "yes" (the interval excludes zero in `sign`'s direction), "opposite", or "includes" (zero)."""
    if not ci or ci.get("estimate") is None or ci.get("low") is None or (ci.get("n") or 0) < MIN_N:
        return "few"
    lo, hi = sorted((ci["low"] * sign, ci["high"] * sign))
    return "yes" if lo > 0 else "opposite" if hi < 0 else "includes"


def cell_verdict(cell: dict, null: str) -> str:
    """One effect's verdict against `null` (module docstring)."""
    sign = cell["direction"]
    if cell.get("requires") is not None and _side(cell["requires"], +1) != "yes":
        return TOO_FEW if _side(cell["requires"], +1) == "few" else NO_SIGNAL
    side = _side(cell["effect"], sign)
    if side != "yes":
        return {"few": TOO_FEW, "opposite": "not reproduced (the opposite effect)",
                "includes": "inconclusive (the interval includes no effect)"}[side]
    if null in cell["nulls"] and _side(cell["nulls"][null]["beyond"], sign) != "yes":
        return f"not beyond the {NULL_WORDS[null]} null"
    return "reproduced"


def recall_verdict(cell: dict, null: str) -> str:
    """Whether the two-hop question reads the fact's neurons beyond the null (D > 0, or R above the null's R)."""
    verdict = cell_verdict(cell, null)
    if verdict == TOO_FEW:
        return verdict
    return f"recalled beyond the {NULL_WORDS[null]} null" if verdict == "reproduced" \
        else f"not beyond the {NULL_WORDS[null]} null"


def combine(cells: dict[str, str]) -> str:
    """A claim's verdict from its cells' verdicts: "reproduced" only when every cell is."""
    if not cells:
        return "not measured"
    values = list(cells.values())
    hits = [k for k, v in cells.items() if v == "reproduced"]
    if len(hits) == len(values):
        return "reproduced"
    if hits:
        return f"mixed: reproduced in {len(hits)} of {len(values)} ({', '.join(hits)})"
    if len(set(values)) == 1:
        return values[0]
    return "not reproduced (" + "; ".join(f"{k}: {v}" for k, v in cells.items()) + ")"


def share_verdict(share: dict) -> str:
    """Claim 2: more than one third of errors come with a recall failure (Wilson interval, real denominator)."""
    if not share or not share.get("n") or share.get("too_few"):
        return TOO_FEW
    if share["low"] > 1 / 3:
        return "reproduced"
    if share["high"] < 1 / 3:
        return "not reproduced (below one third)"
    return "inconclusive (the interval includes one third)"


def _claim_verdicts(n: dict, score: str, summary: str) -> dict:
    """Every claim's verdict on one score and one CoT summary."""
    null = HEADLINE_NULL[score]
    part = n["scores"][score][summary]
    hops = [k for k in part["recall"] if k.endswith("/none")]
    drop = {k.split("/")[0]: cell_verdict(part["recall"][k]["drop"], null) for k in hops}
    recall = {k.split("/")[0]: recall_verdict(part["recall"][k]["recall"], null) for k in hops}
    cot = {k: cell_verdict(v, null) for k, v in part["cot"].items()}
    iv = {k: cell_verdict(v, null) for k, v in n["interventions"].items()}
    conflict = {k: cell_verdict(v, null) for k, v in n["scores"][score]["conflict"].items()}
    share = part["outcomes"]["none"]["errors_with_recall_failure"]
    return {
        "1_recall_drops": {"verdict": combine(drop), "null": null, "cells": drop,
                           "recall": {"verdict": combine(recall), "null": null, "cells": recall}},
        "2_errors_with_recall_failure": {"verdict": share_verdict(share), "cells": {"none": share_verdict(share)},
                                         "null": "wrong_fact" if score == "specific" else "none"},
        "3_cot_raises_recall": {"verdict": combine(cot) if cot else "not measured (no CoT setting in this run)",
                                "null": null, "cells": cot},
        "4_enhance_helps_suppress_hurts": {"verdict": combine(iv), "null": null, "cells": iv,
                                           "measure": "P(first answer token)"},
        "5_conflict_raises_recall": {"verdict": combine(conflict), "null": null, "cells": conflict},
    }


def verdicts(numbers: dict) -> dict:
    """Per claim: the headline verdict with "verdict", "null", "score", "cot_summary", and "by_score" (every
    score x CoT summary). Rules in the module docstring. No items: no verdicts ({})."""
    if not numbers.get("n_items"):
        return {}
    every = {score: {summary: _claim_verdicts(numbers, score, summary) for summary in SUMMARIES} for score in SCORES}
    score, summary = numbers["headline"]["score"], numbers["headline"]["cot_summary"]
    return {claim: {**every[score][summary][claim], "score": score, "cot_summary": summary,
                    "by_score": {sc: {su: every[sc][su][claim] for su in SUMMARIES} for sc in SCORES}}
            for claim in CLAIMS}


def controls_used(table: pd.DataFrame) -> list[str]:
    """The nulls the table carries measurements for (some column of theirs holds a finite value)."""
    marks = {"wrong_fact": "_wrong", "matched_random": "_matched", "random": "_random", "shared": "_shared_"}
    return [name for name, mark in marks.items()
            if any(pd.to_numeric(table[c], errors="coerce").notna().any() for c in table.columns if mark in c)]


def _figure_paths(store, facts_summary: dict) -> dict:
    """Heatmap inputs with their .npy paths resolved (relative paths are relative to the results folder)."""
    out = {}
    for key, spec in (facts_summary.get("heatmaps") or {}).items():
        path = Path(spec["scores_path"])
        out[key] = {**spec, "scores_path": str(path if path.is_absolute() else store.root / path)}
    return out


def write_report(store, settings: StudyConfig, *, model_id: str, filter_state: dict, n_dataset: int,
                 selected: list, table: pd.DataFrame, facts_summary: dict, facts_table: pd.DataFrame | None,
                 timings: dict, peak_memory: dict | None = None) -> Path:
    """Writes items.csv, items.parquet, facts.parquet (when `facts_table` is given), summary.json, report.md and
    figures/ into `store.root`; returns report.md's path.

    Args:
      store: the results folder (`store.root`, `store.write(name, obj)` writes JSON).
      settings: the run's settings; model_id: the model's identity; n_dataset: items in the dataset.
      filter_state: "screened", "kept", "pairs", "skipped" (items the study could not measure, with reasons).
      selected: the case_ids studied. table: one row per item (module docstring).
      facts_summary: "unique", "empty_kn", "shared", "shared_rule", "kn_counts_per_layer", "completeness",
        "completeness_per_layer_max", "heatmaps" ({fact: {"scores_path", "neurons", "title"}}).
      facts_table: one row per fact (neuron lists as list columns), or None. timings: stage wall times (s).
      peak_memory: the process's peak resident memory (GiB) read at the end of each stage this session.
    """
    root = Path(store.root)
    table = table.reset_index(drop=True)
    table.to_csv(root / "items.csv", index=False)
    table.to_parquet(root / "items.parquet", index=False)
    if facts_table is not None:
        facts_table.to_parquet(root / "facts.parquet", index=False)
    numbers = analyse(table, settings)
    skipped = filter_state.get("skipped", [])
    summary = dict(
        settings={"preset": getattr(settings, "preset", None), **settings.to_dict()}, model_id=model_id,
        regenerate=regenerate_command(settings, root),
        dataset={"path": settings.dataset or "built-in (jaxkn.data.builtin_items)", "items": n_dataset},
        filter={"screened": filter_state["screened"], "kept": len(filter_state["kept"]), "studied": len(selected),
                "by_pair": filter_state["pairs"],
                "rule": f"a hop is known when >= ceil(queries_per_hop / 2) of its first {settings.queries_per_hop} "
                        f"queries are answered correctly (greedy, 3-shot)"},
        facts={"unique": facts_summary.get("unique", 0), "empty_kn": facts_summary.get("empty_kn", 0)},
        attribution={"completeness": facts_summary.get("completeness", {}),
                     "completeness_per_layer_max": facts_summary.get("completeness_per_layer_max", [])},
        neurons={"shared": facts_summary.get("shared", []), "shared_rule": facts_summary.get("shared_rule", ""),
                 "kn_counts_per_layer": facts_summary.get("kn_counts_per_layer", {})},
        controls=controls_used(table) if len(table) else [],
        conventions=CONVENTIONS(settings), timings_s={k: round(v, 1) for k, v in timings.items()},
        peak_rss_gib=dict(peak_memory or {}), numbers=numbers,
        skipped={"count": len(skipped), "items": skipped})
    if len(table):
        summary["verdicts"] = verdicts(numbers)
    heatmaps = _figure_paths(store, facts_summary)
    summary["attribution"]["heatmaps"] = heatmap_index(heatmaps)
    summary["figures"] = draw_all(numbers, table, settings, facts_summary, heatmaps, root / "figures")
    record = to_json(StudySummary(**summary))
    store.write("summary.json", record)
    path = root / "report.md"
    path.write_text(render_markdown(record), encoding="utf-8")
    return path


def CONVENTIONS(s: StudyConfig) -> dict:  # noqa: N802 (a table of texts, built from the settings)
    return {
        "scores": "specific: D = R_own - mean R of the wrong-fact sets (METHOD §5); R: the relative score beside its "
                  "matched random and same-count random nulls; paper: mean activation (items.csv *_paper)",
        "recalled": "two-hop level >= tau * single-hop level; for D only where the single-hop D > 0",
        "intervals": "effects: paired differences per item, 95% percentile cluster bootstrap (clusters: items "
                     "linked by a shared fact); shares: Wilson 95% with the real denominator, 'too few to tell' "
                     "below 10 (Wilson treats items as independent)",
        "conflict_statement": "'Q: <hop query>\\nA: <counterfactual>' placed between the exemplars and the question",
        "interventions": f"factors x{s.enhance} / x{s.suppress} at the predicting position (decode mode "
                         f"{s.decode_mode!r}); P(answer) = P(first answer token); null sets: wrong-fact and matched "
                         f"random averaged over their draws, same-count random, the shared neurons alone",
    }


def _settings_lines(s: dict) -> list[str]:
    s = {**s, **s.get("attribution", {})}  # the attribution settings sit in their own dict
    keys = ("preset", "score", "threshold_t", "share_p", "refine_rule", "tau", "site", "baseline", "steps",
            "quadrature", "tolerance", "queries_per_hop", "cot", "cot_summary", "answer_tokens", "cot_tokens",
            "decode_mode", "enhance", "suppress", "limit", "seed", "bootstrap")
    return ["| setting | value |", "|---|---|"] + [f"| {k} | {s[k]} |" for k in keys if k in s]


def render_markdown(summary: dict) -> str:
    """report.md from summary.json's record."""
    n, s = summary["numbers"], summary["settings"]
    f = summary["filter"]
    lines = [
        "# Two-hop factual recall through knowledge neurons: report", "",
        f"Regenerate: `{summary['regenerate']}` (settings below; `--help` lists them).", "",
        f"Model: {summary['model_id']}. Dataset: {summary['dataset']['path']} ({summary['dataset']['items']} items).",
        f"Filter: screened {f['screened']}, kept {f['kept']}, studied {f['studied']} ({f['rule']}).",
        f"Facts: {summary['facts']['unique']} unique, {summary['facts']['empty_kn']} with an empty KN set (such hops "
        "are skipped and counted).",
        "Stage wall times (s, summed over every session that worked on this folder): " + ", ".join(
            f"{k} {v}" for k, v in summary["timings_s"].items() if k != "total_this_session") + ".",
        *([("Peak resident memory of this session's process (GiB, read as each stage ended): " + ", ".join(
            f"{k} {v}" for k, v in summary["peak_rss_gib"].items()) + ".")] if summary.get("peak_rss_gib") else []),
        "",
        *_settings_lines(s), "",
    ]
    skipped = summary.get("skipped", {}).get("items", [])
    if skipped:  # items the study could not measure: counted and named, never silently dropped
        lines += [f"Skipped before any measurement: {len(skipped)} item(s): " + "; ".join(
            f"case {k['case_id']} ({k['reason']})" for k in skipped[:20]) + (" ..." if len(skipped) > 20 else ""), ""]
    if not n.get("n_items"):
        return "\n".join(lines + ["**No item passed the filter: there is nothing to report.**", ""])
    return "\n".join(lines + claim_sections(summary))
