"""The report's per-claim sections (METHOD.md §6: five claims), as markdown lines from summary.json's numbers."""

from __future__ import annotations

from jaxkn.experiments.analysis import HOPS, KINDS, PATTERNS, TARGETS, TAUS
from jaxkn.experiments.report_format import _fmt


def _recall_drop(n: dict, v: dict, s: dict) -> list[str]:
    r = n["recall"]
    lines = ["## Claim 1: recall drops in two-hop questions", "",
             "| hop | single-hop level (out of sample) | two-hop level (no CoT) | change | random control change |"
             " change beyond random | verdict |", "|---|---|---|---|---|---|---|"]
    for h in HOPS:
        lines.append(f"| {h} | {_fmt(r['levels'][f'hop{h}/single'])} | {_fmt(r['levels'][f'hop{h}/none'])} | "
                     f"{_fmt(r['drop'][f'hop{h}'])} | {_fmt(r['drop'][f'hop{h}_random'])} | "
                     f"{_fmt(r['drop'][f'hop{h}_vs_random'])} | {v['1_recall_drops'][str(h)]} |")
    lines += ["", f"Share recalled at tau = {s['tau']} (no CoT): "
              + "; ".join(f"hop {h}: {_fmt(r['recalled_share'][f'hop{h}/none'], True)} (random "
                          f"{_fmt(r['recalled_share'][f'hop{h}/none_random'], True)})" for h in HOPS), ""]
    return lines


def _errors(n: dict, v: dict) -> list[str]:
    o = n["outcomes"]
    lines = ["## Claim 2: over a third of reasoning errors come with a recall failure", "",
             f"Items with knowledge neurons for both hops: {o['n_defined']} ({o['n_undefined']} left out: an empty "
             f"refined set for a hop). Accuracy (no CoT): {_fmt(o['accuracy'], True)}.", "",
             "| outcome | " + " | ".join(PATTERNS) + " |", "|---|" + "---|" * len(PATTERNS)]
    for outcome in ("correct", "wrong"):
        lines.append(f"| {outcome} | " + " | ".join(str(o["table"][outcome][p]) for p in PATTERNS) + " |")
    lines += ["", f"Errors that come with a recall failure: {_fmt(o['errors_with_recall_failure'], True)} "
              f"(paper: over one third). Verdict: **{v['2_errors_with_recall_failure']}**.",
              f"For comparison, correct answers with a recall failure: {_fmt(o['correct_with_recall_failure'], True)}.",
              "The same share of errors over tau: " + ", ".join(
                  f"{tau}: {'n/a' if v is None else f'{100 * v:.0f}%'}"
                  for tau, v in o["errors_with_recall_failure_by_tau"].items()) + ".",
              f"Shortcuts (correct although hop 1 was not recalled): {o['shortcut_count']} items, "
              f"{_fmt(o['shortcut_share_of_correct'], True)} of correct answers. Wrong answers that name the bridge "
              f"entity instead: {_fmt(o['answers_bridge_share'], True)} of all items.", ""]
    return lines


def _cot(n: dict, v: dict, s: dict) -> list[str]:
    r, o = n["recall"], n["outcomes"]
    lines = ["## Claim 3: chain of thought raises recall", "",
             f"CoT levels are the {s['cot_summary']} of R over the generated positions. A maximum over many positions "
             "is large by itself, so each verdict is qualified by the change beyond the random control's change.", "",
             "| hop | CoT | level | random level | change vs no CoT | random change | change beyond random | "
             "recalled share | accuracy | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for h in HOPS:
        for c in s["cot"]:
            extra = ("–", "–", "–", "–") if c == "none" else (
                _fmt(r["cot_change"][f"hop{h}/{c}"]), _fmt(r["cot_change"][f"hop{h}/{c}_random"]),
                _fmt(r["cot_change"][f"hop{h}/{c}_vs_random"]), v["3_cot_raises_recall"].get(f"hop{h}/{c}", "–"))
            lines.append(f"| {h} | {c} | {_fmt(r['levels'][f'hop{h}/{c}'])} | {_fmt(r['levels'][f'hop{h}/{c}_random'])}"
                         f" | {extra[0]} | {extra[1]} | {extra[2]} | {_fmt(r['recalled_share'][f'hop{h}/{c}'], True)} | "
                         f"{_fmt(o['accuracy_by_cot'][c], True)} | {extra[3]} |")
    lines += ["", "Tau curve (share of hops recalled; KN / random control):", "",
              "| tau | " + " | ".join(f"hop{h} {c}" for h in HOPS for c in s["cot"]) + " |",
              "|---|" + "---|" * (2 * len(s["cot"]))]
    for i, tau in enumerate(TAUS):
        cells = []
        for h in HOPS:
            for c in s["cot"]:
                a, b = r["tau_curve"][f"hop{h}/{c}"][i], r["tau_curve"][f"hop{h}/{c}_random"][i]
                cells.append("n/a" if a is None else f"{a:.2f} / {b:.2f}" if b is not None else f"{a:.2f}")
        lines.append(f"| {tau:.2f} | " + " | ".join(cells) + " |")
    return lines + [""]


def _interventions(n: dict, v: dict, s: dict) -> list[str]:
    iv = n["interventions"]
    lines = ["## Claim 4: enhancing knowledge neurons helps, suppressing hurts", "",
             f"Change of P(answer) (probability of the first answer token) and of accuracy, against no "
             f"intervention; enhance = x{s['enhance']}, suppress = x{s['suppress']}.", "",
             "| neurons | intervention | change of P(answer) | change of accuracy | verdict |", "|---|---|---|---|---|"]
    for t in TARGETS:
        for k in KINDS:
            verdict = v["4_enhance_helps_suppress_hurts"][t].get(k, "control")
            lines.append(f"| {t} | {k} | {_fmt(iv[f'{t}/{k}']['delta_p'])} | "
                         f"{_fmt(iv[f'{t}/{k}']['delta_accuracy'], True)} | {verdict} |")
        for k in ("enhance", "suppress"):
            lines.append(f"| {t} | {k} minus random {k} | {_fmt(iv[f'{t}/{k}_vs_random']['delta_p'])} | | |")
    return lines + [""]


def _conflict(n: dict, v: dict) -> list[str]:
    cf = n["conflict"]
    lines = ["## Claim 5: knowledge conflict raises recall of the true fact", "",
             "A counterfactual statement of one hop (same relation, another object of the same kind) is stated before "
             "the two-hop question; R of the true fact is read at the last token.", "",
             "| stated hop | change of R (true fact) | random control change | beyond random | recalled without -> with"
             " | answer follows true / counterfactual / other | verdict |", "|---|---|---|---|---|---|---|"]
    for h in HOPS:
        c = cf[f"hop{h}"]
        follows = " / ".join(_fmt(c["follows"][f], True) for f in ("true", "counterfactual", "other"))
        lines.append(f"| {h} | {_fmt(c['change'])} | {_fmt(c['change_random'])} | {_fmt(c['change_vs_random'])} | "
                     f"{_fmt(c['recalled_plain'], True)} -> {_fmt(c['recalled_conflict'], True)} | {follows} | "
                     f"{v['5_conflict_raises_recall'][f'hop{h}']} |")
    return lines + [""]


def _figures(summary: dict) -> list[str]:
    return ["## Figures", ""] + [f"![{name}](figures/{name})" for name in summary.get("figures", [])] + [""]


def _headlines(n: dict, v: dict, s: dict) -> list[str]:
    r, o, iv, cf = n["recall"], n["outcomes"], n["interventions"], n["conflict"]
    cot = [c for c in s["cot"] if c != "none"]
    return [
        "## The five claims at a glance", "",
        "1. **Recall drops in two-hop questions** (two-hop minus single-hop level, no CoT): " + "; ".join(
            f"hop {h} {_fmt(r['drop'][f'hop{h}'])}: {v['1_recall_drops'][str(h)]}" for h in HOPS) + ".",
        f"2. **Over a third of reasoning errors come with a recall failure**: "
        f"{_fmt(o['errors_with_recall_failure'], True)} of errors: {v['2_errors_with_recall_failure']}.",
        "3. **CoT raises recall** (change of the level against no CoT; beyond the random control in the table): "
        + "; ".join(f"hop {h} {c} {_fmt(r['cot_change'][f'hop{h}/{c}'])}: "
            f"{v['3_cot_raises_recall'][f'hop{h}/{c}']}" for h in HOPS for c in cot) + ".",
        "4. **Enhancing helps, suppressing hurts** (change of P(answer), both hops' neurons): "
        f"enhance {_fmt(iv['both/enhance']['delta_p'])}: {v['4_enhance_helps_suppress_hurts']['both']['enhance']}; "
        f"suppress {_fmt(iv['both/suppress']['delta_p'])}: {v['4_enhance_helps_suppress_hurts']['both']['suppress']}.",
        "5. **Knowledge conflict raises recall of the true fact** (change of R with a counterfactual hop stated): "
        + "; ".join(f"hop {h} {_fmt(cf[f'hop{h}']['change'])}: {v['5_conflict_raises_recall'][f'hop{h}']}"
                    for h in HOPS) + ".", "",
    ]


CAVEATS = [
    "## How to read the verdicts", "",
    "- \"reproduced\" means the 95% interval of the effect excludes zero in the paper's direction; \"but not beyond the "
    "random control\" means a random neuron set with the same count per layer shows an effect the interval cannot "
    "tell apart. With few items the intervals are wide: a verdict is about this model and this sample only.",
    "- The relative score R of a random set divides by the sum of |abar| of neurons that carry no particular "
    "signal, so its values scatter far more than the knowledge neurons' (and a maximum over CoT positions more so).",
    "- Claim 2 depends on tau: with the default tau = 0.5 a hop almost never counts as not recalled; the share over "
    "tau is printed beside the headline.",
    "- Claim 4 reads P(first answer token) with the neurons scaled at the predicting position only (decode mode "
    "`last`); accuracy is judged on the greedy answer under the same intervention.", "",
]


def claim_sections(summary: dict) -> list[str]:
    n, v, s = summary["numbers"], summary["verdicts"], summary["settings"]
    return (_headlines(n, v, s) + CAVEATS + _recall_drop(n, v, s) + _errors(n, v) + _cot(n, v, s) + _interventions(n, v, s) + _conflict(n, v)
            + _figures(summary))
