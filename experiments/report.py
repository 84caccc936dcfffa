"""The study's report: items.csv, summary.json (every number and setting), report.md and PNG figures.

Everything here is recomputed from the per-item files (`experiments.store`) each time, so the report always
matches the results folder. Each of METHOD.md's five claims gets its measured effect, a 95% bootstrap interval
over items, and a plain verdict: "reproduced" when the interval excludes no-effect in the paper's direction,
"not reproduced" when it excludes it in the other direction or (claim 2) the estimate is below one third, and
"inconclusive" otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxkn.experiments.analysis import HOPS, TARGETS, analyse, item_table
from jaxkn.experiments.figures import draw_all
from jaxkn.experiments.report_claims import claim_sections
from jaxkn.experiments.results import StudySummary, to_json
from jaxkn.experiments.settings import StudyConfig

REGENERATE = "python -m jaxkn.experiments.two_hop --out experiments/default_run"


def _direction(ci: dict | None, sign: int) -> str:
    """Verdict of an effect expected to have `sign` (+1 / -1)."""
    if not ci or ci.get("estimate") is None or ci.get("low") is None:
        return "inconclusive (too few items)"
    low, high = ci["low"] * sign, ci["high"] * sign
    lo, hi = min(low, high), max(low, high)
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "not reproduced (the opposite effect)"
    return "inconclusive (the interval includes no effect)"


def _against_control(effect: dict, beyond: dict, sign: int) -> str:
    """The verdict of `effect`, qualified when the same effect is not shown beyond the random control."""
    verdict = _direction(effect, sign)
    if verdict == "reproduced" and _direction(beyond, sign) != "reproduced":
        return "reproduced, but not beyond the random control"
    return verdict


def verdicts(n: dict) -> dict:
    """One verdict per claim (see module docstring), with the numbers it rests on."""
    r, o, iv, cf = n["recall"], n["outcomes"], n["interventions"], n["conflict"]
    share = o["errors_with_recall_failure"]
    if share.get("estimate") is None:
        v2 = "inconclusive (no reasoning error with both hops' neurons)"
    elif share["estimate"] > 1 / 3:
        v2 = "reproduced" if (share.get("low") or 0) > 1 / 3 else "reproduced in the estimate; interval reaches below 1/3"
    else:
        v2 = "not reproduced (estimate below one third)"
    cot_keys = [k for k in r["cot_change"] if k.endswith("_vs_random")]
    return {
        "1_recall_drops": {h: _against_control(r["drop"][f"hop{h}"], r["drop"][f"hop{h}_vs_random"], -1)
                           for h in ("1", "2")},
        "2_errors_with_recall_failure": v2,
        "3_cot_raises_recall": {k.replace("_vs_random", ""): _against_control(
            r["cot_change"][k.replace("_vs_random", "")], r["cot_change"][k], +1) for k in cot_keys},
        "4_enhance_helps_suppress_hurts": {
            t: {k: _against_control(iv[f"{t}/{k}"]["delta_p"], iv[f"{t}/{k}_vs_random"]["delta_p"], sign)
                for k, sign in (("enhance", +1), ("suppress", -1))} for t in TARGETS},
        "5_conflict_raises_recall": {f"hop{h}": _against_control(cf[f"hop{h}"]["change"],
                                                                 cf[f"hop{h}"]["change_vs_random"], +1)
                                     for h in HOPS},
    }


def write_report(store, settings: StudyConfig, *, model_id: str, filter_state: dict, n_dataset: int,
                 selected: list, facts: dict, timings: dict) -> Path:
    """Writes items.csv, summary.json, report.md and figures/ into the results folder; returns report.md."""
    results = [r for r in store.items() if r.case_id in set(selected)]
    table = item_table(results, settings.cot)
    table.to_csv(store.root / "items.csv", index=False)
    numbers = analyse(table, settings) if len(table) else {"n_items": 0}
    summary = {
        "settings": settings.to_dict(), "model_id": model_id, "regenerate": REGENERATE,
        "dataset": {"path": settings.dataset or "built-in (jaxkn.data.builtin_items)", "items": n_dataset},
        "filter": {"screened": filter_state["screened"], "kept": len(filter_state["kept"]),
                   "studied": len(selected), "by_pair": filter_state["pairs"],
                   "rule": f"a hop is known when >= ceil(queries_per_hop / 2) of its first "
                           f"{settings.queries_per_hop} queries are answered correctly (greedy, 3-shot)"},
        "facts": {"unique": len(facts), "empty_kn": sum(1 for f in facts.values() if not f.neurons),
                  "completeness_error_max": max((f.completeness_error_max for f in facts.values()), default=0.0),
                  "completeness_error_median": float(np.median([f.completeness_error_max for f in facts.values()]))
                  if facts else 0.0},
        "conventions": {
            "score": "relative score R (METHOD §5); the paper's mean activation is in items.csv (*_paper)",
            "conflict_statement": "'Q: <hop query>\\nA: <counterfactual>' placed between the exemplars and the question",
            "interventions": f"factors x{settings.enhance} / x{settings.suppress} at the predicting position "
                             f"(decode mode {settings.decode_mode!r}); P(answer) = P(first answer token | prompt) at the "
                             f"intervened predicting position; all conditions decode in one batch",
        },
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "numbers": numbers,
        "skipped": {"count": len(filter_state.get("skipped", [])), "items": filter_state.get("skipped", [])},
    }
    if len(table):
        summary["verdicts"] = verdicts(numbers)
        summary["figures"] = draw_all(numbers, table, settings, store.root / "figures")
    record = to_json(StudySummary(**summary))
    store.write("summary.json", record)
    path = store.root / "report.md"
    path.write_text(render_markdown(record), encoding="utf-8")
    return path


def _settings_lines(s: dict) -> list[str]:
    s = {**s, **s.get("attribution", {})}  # the attribution settings sit in their own dict
    keys = ("threshold_t", "share_p", "tau", "site", "baseline", "steps", "quadrature", "queries_per_hop",
            "cot", "cot_summary", "answer_tokens", "cot_tokens", "decode_mode", "enhance", "suppress", "limit",
            "seed", "bootstrap")
    return ["| setting | value |", "|---|---|"] + [f"| {k} | {s[k]} |" for k in keys]


def render_markdown(summary: dict) -> str:
    n, s = summary["numbers"], summary["settings"]
    lines = [
        "# Two-hop factual recall through knowledge neurons: report", "",
        f"Regenerate: `{summary['regenerate']}` (settings below; `--help` lists them).", "",
        f"Model: {summary['model_id']}. Dataset: {summary['dataset']['path']} ({summary['dataset']['items']} items).",
        f"Filter: screened {summary['filter']['screened']}, kept {summary['filter']['kept']}, studied "
        f"{summary['filter']['studied']} ({summary['filter']['rule']}).",
        f"Facts: {summary['facts']['unique']} unique, {summary['facts']['empty_kn']} with an empty refined KN set "
        f"(such hops are skipped and counted). IG completeness error |sum Attr - (P(a) - P(b))| per layer, largest over "
        f"facts: {summary['facts']['completeness_error_max']:.3g}; median over facts of each fact's largest: "
        f"{summary['facts']['completeness_error_median']:.3g}.",
        "Stage wall times (s, summed over every session that worked on this folder): " + ", ".join(
            f"{k} {v}" for k, v in summary["timings_s"].items() if k != "total_this_session") + ".", "",
        *_settings_lines(s), "",
        "Intervals: 95% percentile bootstrap over items. Scores: the relative KN score R (1 = the fact's own "
        "single-hop average); every KN number has the random control (same count per layer) beside it.", "",
    ]
    skipped = summary.get("skipped", {}).get("items", [])
    if skipped:  # items the study could not measure: counted and named, never silently dropped
        at = lines.index("") + 1
        lines[at:at] = [f"Skipped before any measurement: {len(skipped)} item(s): " + "; ".join(
            f"case {s['case_id']} ({s['reason']})" for s in skipped[:20]) + (" ..." if len(skipped) > 20 else ""), ""]
    if not n.get("n_items"):
        return "\n".join(lines + ["**No item passed the filter: there is nothing to report.**", ""])

    return "\n".join(lines + claim_sections(summary))
