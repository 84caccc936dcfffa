"""The report's sections as markdown lines from summary.json: the five claims (METHOD §6), each on both scores
and both CoT summaries with its nulls, then the neurons (shared, per layer), IG completeness, the paper's score
and the heatmaps."""

from __future__ import annotations

from jaxkn.experiments.analysis import (
    HOPS,
    INTERVENTION_NULLS,
    PATTERNS,
    SCORE_NULLS,
    SCORES,
    SUMMARIES,
    TAUS,
)
from jaxkn.experiments.report_format import NULL_WORDS, _fmt, share, verdict_text

CLAIM_TITLES = {
    "1_recall_drops": "Claim 1: recall drops in two-hop questions",
    "2_errors_with_recall_failure": "Claim 2: over a third of reasoning errors come with a recall failure",
    "3_cot_raises_recall": "Claim 3: chain of thought raises recall",
    "4_enhance_helps_suppress_hurts": "Claim 4: enhancing knowledge neurons helps, suppressing hurts",
    "5_conflict_raises_recall": "Claim 5: knowledge conflict raises recall of the true fact",
}


def _score_name(score: str) -> str:
    return "specific score D (against the wrong-fact null)" if score == "specific" else \
        "relative score R (against the matched random null; same-count random beside it)"


def _headlines(summary: dict) -> list[str]:
    v, n = summary["verdicts"], summary["numbers"]
    h = n["headline"]
    lines = ["## The five claims at a glance", "",
             f"Headline: score **{h['score']}**, CoT summary **{h['cot_summary']}**, tau = {h['tau']}. Every verdict "
             f"names the null it was tested against; the other score and summary follow in brackets.", ""]
    for i, (claim, title) in enumerate(CLAIM_TITLES.items(), 1):
        others = "; ".join(f"{sc}/{su}: {v[claim]['by_score'][sc][su]['verdict']}"
                           for sc in SCORES for su in SUMMARIES)
        lines.append(f"{i}. **{title.split(': ', 1)[1]}**: {verdict_text(v[claim])} [{others}]")
        if claim == "1_recall_drops":
            rec = v[claim]["recall"]
            lines.append(f"   - two-hop recall itself: **{rec['verdict']}** (null: {rec['null']}) [" + "; ".join(
                f"{sc}/{su}: {v[claim]['by_score'][sc][su]['recall']['verdict']}" for sc in SCORES
                for su in SUMMARIES) + "]")
    return lines + [""]


HOW_TO_READ = [
    "## How to read this report", "",
    "- Two scores, side by side. **D** (specific) = R of the fact's own KN set minus the mean R of other facts' "
    "sets (the wrong-fact null): it is positive only when the question activates *this fact's* neurons more than "
    "another fact's. **R** (the paper's reading) is the relative score, 1 on the single-hop queries' own average; a "
    "set of answer-format neurons reads high for every fact, so R is compared with a matched random set (same layer, "
    "same |abar| decile) and a same-count random set.",
    "- \"reproduced\" means the 95% interval of the effect excludes no effect in the paper's direction **and** the "
    "effect beats the named null (for D the null is built in; for R the paired difference own minus matched random "
    "must exclude zero too). \"not beyond the X null\": the effect shows, but the null shows it as well. \"too few to "
    "tell\": fewer than 10 items (or errors) carry the number.",
    "- Effects are paired differences per item; their intervals are a cluster bootstrap: items that share a fact "
    "(hop 1 or hop 2) are one cluster and are resampled together. Shares (k/n) are Wilson intervals with their real "
    "denominator (the errors, not the items); Wilson treats items as independent.",
    "- CoT reads are summarised over the generated positions by the max and by the mean; both are shown (a maximum "
    "over many positions is large by itself). Without CoT one position is read, so max = mean.",
    "- Recalled := two-hop level >= tau * single-hop level (single-hop levels out of sample); for D only where the "
    "single-hop D > 0 (other hops show no specific signal and are counted as undefined).", "",
]


def _recall(n: dict, v: dict, s: dict) -> list[str]:
    lines = [f"## {CLAIM_TITLES['1_recall_drops']}", ""]
    for score in SCORES:
        for summary in SUMMARIES:
            vv = v["1_recall_drops"]["by_score"][score][summary]
            rec = n["scores"][score][summary]["recall"]
            nulls = list(SCORE_NULLS[score])
            lines += [f"### {_score_name(score)}, CoT summary {summary}", "",
                      f"Verdict (no CoT): **{vv['verdict']}** (null: {vv['null']}); recall on the two-hop question: "
                      f"**{vv['recall']['verdict']}**.", "",
                      "| hop | CoT | single-hop level | two-hop level | drop | " + "".join(
                          f"drop beyond {NULL_WORDS[x]} | " for x in nulls) + "two-hop beyond null | recalled | " + "".join(
                          f"{NULL_WORDS[x]} recalled | " for x in nulls) + "undefined | wrong-fact sets' R (two-hop) |",
                      "|---|---|---|---|---|" + "---|" * (2 * len(nulls) + 4)]
            for h in HOPS:
                for c in s["cot"]:
                    cell = rec[f"hop{h}/{c}"]
                    beyond = cell["recall"]["effect"] if not nulls else cell["recall"]["nulls"][nulls[0]]["beyond"]
                    lines.append(
                        f"| {h} | {c} | {_fmt(cell['single'])} | {_fmt(cell['two_hop'])} | "
                        f"{_fmt(cell['drop']['effect'])} | "
                        + "".join(f"{_fmt(cell['drop']['nulls'][x]['beyond'])} | " for x in nulls)
                        + f"{_fmt(beyond)} | {share(cell['recalled_share'])} | "
                        + "".join(f"{share(cell['null_recalled_share'][x])} | " for x in nulls)
                        + f"{cell['undefined']} | {_fmt(cell['wrong_fact_R']['two_hop'])} |")
            lines.append("")
    return lines


def _errors(n: dict, v: dict, s: dict) -> list[str]:
    lines = [f"## {CLAIM_TITLES['2_errors_with_recall_failure']}", "",
             "Among items whose two hops both have a defined recall flag, the two-hop outcome splits into correct / "
             "wrong x recall pattern. The share's denominator is the number of errors.", ""]
    for score in SCORES:
        for summary in SUMMARIES:
            vv = v["2_errors_with_recall_failure"]["by_score"][score][summary]
            out = n["scores"][score][summary]["outcomes"]
            lines += [f"### {_score_name(score)}, CoT summary {summary}", "",
                      f"Verdict (no CoT, paper: over one third): **{vv['verdict']}** (null: {vv['null']}).", "",
                      "| CoT | defined (undefined) | accuracy | errors with a recall failure | correct with a recall "
                      "failure | shortcuts (correct, hop 1 not recalled) |", "|---|---|---|---|---|---|"]
            for c in s["cot"]:
                o = out[c]
                lines.append(f"| {c} | {o['n_defined']} ({o['n_undefined']}) | {share(o['accuracy'])} | "
                             f"{share(o['errors_with_recall_failure'])} | {share(o['correct_with_recall_failure'])} | "
                             f"{share(o['shortcuts'])} |")
            o = out["none"]
            lines += ["", "| no CoT | " + " | ".join(PATTERNS) + " |", "|---|" + "---|" * len(PATTERNS)]
            lines += [f"| {k} | " + " | ".join(str(o["table"][k][p]) for p in PATTERNS) + " |"
                      for k in ("correct", "wrong")]
            lines += ["", "Errors with a recall failure over tau (no CoT): " + ", ".join(
                f"{tau}: {share(w)}" for tau, w in list(o["errors_with_recall_failure_by_tau"].items())[::3]) + ".",
                      ""]
    return lines


def _cot(n: dict, v: dict, s: dict) -> list[str]:
    lines = [f"## {CLAIM_TITLES['3_cot_raises_recall']}", ""]
    if len(s["cot"]) < 2:
        return lines + ["This run has no CoT setting besides none: nothing to compare.", ""]
    for score in SCORES:
        nulls = list(SCORE_NULLS[score])
        for summary in SUMMARIES:
            vv = v["3_cot_raises_recall"]["by_score"][score][summary]
            cot = n["scores"][score][summary]["cot"]
            lines += [f"### {_score_name(score)}, CoT summary {summary}", "",
                      f"Verdict: **{vv['verdict']}** (null: {vv['null']}).", "",
                      "| hop | CoT | change vs no CoT | " + "".join(
                          f"{NULL_WORDS[x]} change | beyond {NULL_WORDS[x]} | " for x in nulls) + "verdict |",
                      "|---|---|---|" + "---|" * (2 * len(nulls) + 1)]
            for key, cell in cot.items():
                h, c = key.split("/")
                lines.append(f"| {h[3:]} | {c} | {_fmt(cell['effect'])} | " + "".join(
                    f"{_fmt(cell['nulls'][x]['effect'])} | {_fmt(cell['nulls'][x]['beyond'])} | " for x in nulls)
                    + f"{vv['cells'][key]} |")
            lines.append("")
    return lines + _tau(n, s)


def _tau(n: dict, s: dict) -> list[str]:
    lines = ["### Tau curves (share of hops recalled; own / nulls)", ""]
    for score in SCORES:
        for summary in SUMMARIES:
            curves = n["scores"][score][summary]["tau_curve"]
            names = ["own"] + list(SCORE_NULLS[score])
            cols = [f"hop{h}/{c}" for h in HOPS for c in s["cot"]]
            lines += [f"{_score_name(score)}, CoT summary {summary} ({' / '.join(names)}):", "",
                      "| tau | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
            for i, tau in enumerate(TAUS):
                cells = [" / ".join("n/a" if curves[f"{col}/{x}"][i] is None else f"{curves[f'{col}/{x}'][i]:.2f}"
                                    for x in names) for col in cols]
                lines.append(f"| {tau:.2f} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _interventions(n: dict, v: dict, s: dict) -> list[str]:
    iv = n["interventions"]
    nulls = list(INTERVENTION_NULLS)
    vs = {sc: v["4_enhance_helps_suppress_hurts"]["by_score"][sc][SUMMARIES[0]] for sc in SCORES}
    lines = [f"## {CLAIM_TITLES['4_enhance_helps_suppress_hurts']}", "",
             f"Change of P(answer) (first answer token) against no intervention; enhance = x{s['enhance']}, suppress "
             f"= x{s['suppress']}. Null sets: " + ", ".join(NULL_WORDS[x] for x in nulls) + " (wrong-fact and "
             "matched random averaged over their draws). The verdict on the specific score is tested against the "
             "wrong-fact sets, on R against the matched random sets. No CoT read: both summaries coincide.", "",
             f"Verdicts: specific **{vs['specific']['verdict']}** (null: wrong_fact); R **{vs['R']['verdict']}** "
             "(null: matched_random).", "",
             "| neurons | intervention | change of P(answer) | " + "".join(
                 f"{NULL_WORDS[x]} change | own minus {NULL_WORDS[x]} | " for x in nulls)
             + "change of accuracy | verdict (specific / R) |", "|---|---|---|" + "---|" * (2 * len(nulls) + 2)]
    for key, cell in iv.items():
        t, k = key.split("/")
        lines.append(f"| {t} | {k} | {_fmt(cell['effect'])} | " + "".join(
            f"{_fmt(cell['nulls'][x]['effect'])} | {_fmt(cell['nulls'][x]['beyond'])} | " for x in nulls)
            + f"{_fmt(cell['accuracy'], True)} | {vs['specific']['cells'][key]} / {vs['R']['cells'][key]} |")
    return lines + [""]


def _conflict(n: dict, v: dict) -> list[str]:
    lines = [f"## {CLAIM_TITLES['5_conflict_raises_recall']}", "",
             "A counterfactual statement of one hop (same relation, another object) is stated before the two-hop "
             "question; the true fact's level is read at the last token (no CoT: both summaries coincide).", ""]
    for score in SCORES:
        nulls = [x for x in SCORE_NULLS[score] if x == "matched_random"]
        vv = v["5_conflict_raises_recall"]["by_score"][score][SUMMARIES[0]]
        lines += [f"{_score_name(score)}: **{vv['verdict']}** (null: {vv['null']}).", "",
                  "| stated hop | change of the true fact's level | " + "".join(
                      f"{NULL_WORDS[x]} change | beyond {NULL_WORDS[x]} | " for x in nulls) + "verdict |",
                  "|---|---|" + "---|" * (2 * len(nulls) + 1)]
        for key, cell in n["scores"][score]["conflict"].items():
            lines.append(f"| {key[3:]} | {_fmt(cell['effect'])} | " + "".join(
                f"{_fmt(cell['nulls'][x]['effect'])} | {_fmt(cell['nulls'][x]['beyond'])} | " for x in nulls
                if x in cell["nulls"]) + f"{vv['cells'][key]} |")
        lines.append("")
    lines += ["The answer follows the true / counterfactual / other chain: " + "; ".join(
        f"hop {h} stated: " + " / ".join(share(n["follows"][f"hop{h}"][f]) for f in ("true", "counterfactual", "other"))
        for h in HOPS) + ".", ""]
    return lines


def _neurons(summary: dict) -> list[str]:
    nr, figs = summary.get("neurons", {}), set(summary.get("figures", []))
    shared = nr.get("shared", [])
    lines = ["## Shared neurons", "",
             f"Rule: {nr.get('shared_rule') or 'not recorded'}. {len(shared)} shared neuron(s); they are removed "
             "from every fact-specific set.", ""]
    if shared:
        lines += ["| neuron | layer | facts |", "|---|---|---|"] + [
            f"| ({e['neuron'][0]}, {e['neuron'][1]}) | {e['neuron'][0]} | {e['facts']} |" for e in shared] + [""]
    if "shared_neurons.png" in figs:
        lines += ["![shared neurons](figures/shared_neurons.png)", ""]
    counts = nr.get("kn_counts_per_layer", {})
    lines += ["## Knowledge neurons per layer", ""]
    if counts:
        lines.append("Totals: " + "; ".join(
            f"{k} {sum(c)} (most in layer {max(range(len(c)), key=c.__getitem__)})" if sum(c) else f"{k} 0"
            for k, c in counts.items()) + ".")
    else:
        lines.append("No KN counts were recorded.")
    if "kn_counts_per_layer.png" in figs:
        lines += ["", "![KNs per layer](figures/kn_counts_per_layer.png)"]
    return lines + [""]


def _completeness(summary: dict) -> list[str]:
    at = summary.get("attribution", {})
    c, per_layer = at.get("completeness", {}), at.get("completeness_per_layer_max", [])
    points = c.get("points_per_layer") or []
    tol = (summary["settings"].get("attribution") or {}).get("tolerance")
    lines = ["## Integrated-gradients completeness per layer", "",
             f"Completeness error |sum Attr - (P(a) - P(b))| per layer: largest over facts {c.get('max', 'n/a')}, median "
             f"{c.get('median', 'n/a')}; {c.get('flagged_layers', 'n/a')} layer(s) flagged (above the tolerance "
             f"{tol} within the point budget).", ""]
    if per_layer:
        lines += ["| layer | max error | points used | above tolerance |", "|---|---|---|---|"] + [
            f"| {i} | {e:.3g} | {points[i] if i < len(points) else 'n/a'} | "
            f"{'yes' if tol is not None and e > tol else ''} |" for i, e in enumerate(per_layer)] + [""]
    if "completeness_per_layer.png" in summary.get("figures", []):
        lines += ["![completeness per layer](figures/completeness_per_layer.png)", ""]
    return lines


def _paper_score(n: dict) -> list[str]:
    p = n["paper_score"]
    return ["## The paper's KN score (mean activation)", "",
            "Single-hop level (out of sample): " + "; ".join(
                f"hop {h} {_fmt(p[f'hop{h}']['single'])}, negative for {p[f'hop{h}']['negative']} of "
                f"{p[f'hop{h}']['n']} items" for h in HOPS)
            + ". At the product site activations have either sign and a mean over a set cancels: a negative "
              "single-hop level makes \"two-hop >= tau * single-hop\" meaningless, which is why R (and D) are "
              "the scores used here.", ""]


def _heatmaps(summary: dict) -> list[str]:
    index = summary.get("attribution", {}).get("heatmaps", {})
    if not index:
        return []
    lines = ["## Attribution heatmaps", "", "Layer x neuron attribution of a few facts (max |.| pooled over neuron "
             "columns), their knowledge neurons circled.", ""]
    for key, entry in index.items():
        lines += [f"{entry['title']} (fact {key}):", "", f"![{key}](figures/{entry['figure']})" if entry["figure"]
                  else "(its attribution scores file is missing: not drawn)", ""]
    return lines


def _figures(summary: dict) -> list[str]:
    shown = {"shared_neurons.png", "kn_counts_per_layer.png", "completeness_per_layer.png"}
    rest = [f for f in summary.get("figures", []) if f not in shown and not f.startswith("heatmap_")]
    return ["## Figures", ""] + [f"![{f}](figures/{f})" for f in rest] + [""]


def claim_sections(summary: dict) -> list[str]:
    n, v, s = summary["numbers"], summary["verdicts"], summary["settings"]
    r = n["resampling"]
    intro = [f"Items: {n['n_items']} in {r['clusters']} fact clusters ({r['rule']}; {r['resamples']} resamples). "
             f"Empty KN sets: hop 1 {n['empty_kn']['hop1']}, hop 2 {n['empty_kn']['hop2']}. Single-hop D <= 0 "
             f"(recalled-specific undefined): hop 1 {n['specific_undefined']['hop1']}, hop 2 "
             f"{n['specific_undefined']['hop2']}. Controls: {', '.join(summary.get('controls', [])) or 'none'}.", ""]
    return (intro + _headlines(summary) + HOW_TO_READ + _recall(n, v, s) + _errors(n, v, s) + _cot(n, v, s)
            + _interventions(n, v, s) + _conflict(n, v) + _neurons(summary) + _completeness(summary)
            + _paper_score(n) + _heatmaps(summary) + _figures(summary))


__all__ = ["claim_sections"]
