"""From per-item result files to one table and every headline number of the study, with bootstrap intervals.

`item_table(results)` flattens the item JSON files into one row per item (the CSV that ships with a report);
`analyse(table, settings)` computes every number from that table alone, so a reader can recompute them from the
CSV. Recall is decided here: Recalled(hop) := two-hop level >= tau * single-hop level (METHOD §5), with the CoT
level summarised by `settings.cot_summary`. A hop whose refined KN set is empty has no level: it is left out of
every recall statistic and counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jaxkn.experiments.results import ItemResult
from jaxkn.experiments.settings import StudyConfig
from jaxkn.experiments.stats import conditional_share_ci, mean_ci, paired_difference_ci, share_ci

HOPS = (1, 2)
TARGETS = ("hop1", "hop2", "both")
KINDS = ("enhance", "suppress", "random_enhance", "random_suppress")
TAUS = tuple(np.round(np.arange(0.25, 1.0001, 0.05), 2))


def _num(value) -> float:
    return np.nan if value is None else value


def _read(reads: dict, name: str, key: str) -> float:
    return _num(reads.get(name, {}).get(key))


def item_row(res: ItemResult, cot_settings) -> dict:
    """One item's result as a flat row (NaN where a hop has no knowledge neurons)."""
    row = {"case_id": res.case_id, "relation1": res.relations[0], "relation2": res.relations[1],
           "answer": res.answer, "bridge": res.bridge}
    for h in HOPS:
        row[f"kn{h}"] = res.kn_sizes[f"hop{h}"]
        single = res.single.get(f"hop{h}")
        for name, key in (("single", "R"), ("single_random", "R_random"), ("single_paper", "paper")):
            row[f"{name}{h}"] = _num(getattr(single, key)) if single else np.nan
    for c in cot_settings:
        read = res.cot.get(c)
        row[f"{c}_correct"] = bool(read.correct) if read else False
        row[f"{c}_answer"] = read.answer_text if read else ""
        for h in HOPS:
            for suffix, key in (("", "R"), ("_mean", "R_mean"), ("_paper", "paper")):
                row[f"{c}_h{h}{suffix}"] = _read(read.reads, f"hop{h}", key) if read else np.nan
                row[f"{c}_h{h}_random{suffix}"] = _read(read.reads, f"hop{h}_random", key) if read else np.nan
    none = res.cot.get("none")
    row["none_says_bridge"] = bool(none.says_bridge) if none else False
    iv = res.interventions
    row["base_p"] = _num(iv["base"].p_first) if "base" in iv else np.nan
    row["base_correct"] = float(iv["base"].correct) if "base" in iv else 0.0
    for t in TARGETS:
        for k in KINDS:
            cond = iv.get(f"{t}/{k}")
            row[f"{t}_{k}_p"] = _num(cond.p_first) if cond else np.nan
            row[f"{t}_{k}_correct"] = float(cond.correct) if cond else np.nan
    for h in HOPS:
        conflict = res.conflict.get(f"hop{h}")
        row[f"conflict{h}_R"] = _read(conflict.reads, f"hop{h}", "R") if conflict else np.nan
        row[f"conflict{h}_R_random"] = _read(conflict.reads, f"hop{h}_random", "R") if conflict else np.nan
        row[f"conflict{h}_follows"] = conflict.follows if conflict else ""
        row[f"conflict{h}_counterfactual"] = conflict.counterfactual if conflict else ""
    return row


def item_table(results: list[ItemResult], cot_settings) -> pd.DataFrame:
    return pd.DataFrame([item_row(r, cot_settings) for r in results])


def level(table: pd.DataFrame, cot: str, h: int, summary: str, random: bool = False) -> np.ndarray:
    """The two-hop level of hop h under a CoT setting (no CoT: last token; CoT: max or mean over positions)."""
    rand = "_random" if random else ""
    col = f"{cot}_h{h}{rand}" if cot == "none" or summary == "max" else f"{cot}_h{h}{rand}_mean"
    return table[col].to_numpy(np.float64)


def recall_flags(table: pd.DataFrame, cot: str, h: int, tau: float, summary: str, random: bool = False):
    """(recalled [N] bool, defined [N] bool) of hop h."""
    two = level(table, cot, h, summary, random)
    single = table[f"single{'_random' if random else ''}{h}"].to_numpy(np.float64)
    defined = np.isfinite(two) & np.isfinite(single)
    return defined & (two >= tau * single), defined


def _ci(fn, *args, s: StudyConfig):
    return fn(*args, n_boot=s.bootstrap, seed=s.seed + s.seed_bootstrap).as_dict()


def recall_numbers(t: pd.DataFrame, s: StudyConfig) -> dict:
    """Claims 1 and 3: levels per CoT setting, their changes, shares recalled, the tau curve."""
    out = {"levels": {}, "drop": {}, "cot_change": {}, "recalled_share": {}, "tau_curve": {}}
    for h in HOPS:
        single, single_r = t[f"single{h}"], t[f"single_random{h}"]
        out["levels"][f"hop{h}/single"] = _ci(mean_ci, single, s=s)
        out["levels"][f"hop{h}/single_random"] = _ci(mean_ci, single_r, s=s)
        for c in s.cot:
            two, two_r = level(t, c, h, s.cot_summary), level(t, c, h, s.cot_summary, True)
            out["levels"][f"hop{h}/{c}"] = _ci(mean_ci, two, s=s)
            out["levels"][f"hop{h}/{c}_random"] = _ci(mean_ci, two_r, s=s)
            rec, defined = recall_flags(t, c, h, s.tau, s.cot_summary)
            rec_r, defined_r = recall_flags(t, c, h, s.tau, s.cot_summary, True)
            out["recalled_share"][f"hop{h}/{c}"] = _ci(share_ci, rec[defined], s=s)
            out["recalled_share"][f"hop{h}/{c}_random"] = _ci(share_ci, rec_r[defined_r], s=s)
            out["tau_curve"][f"hop{h}/{c}"] = [float(np.mean(recall_flags(t, c, h, tau, s.cot_summary)[0][defined]))
                                               if defined.any() else None for tau in TAUS]
            out["tau_curve"][f"hop{h}/{c}_random"] = [
                float(np.mean(recall_flags(t, c, h, tau, s.cot_summary, True)[0][defined_r]))
                if defined_r.any() else None for tau in TAUS]
        out["drop"][f"hop{h}"] = _ci(paired_difference_ci, level(t, "none", h, "max"), single, s=s)
        out["drop"][f"hop{h}_random"] = _ci(paired_difference_ci, level(t, "none", h, "max", True), single_r, s=s)
        out["drop"][f"hop{h}_vs_random"] = _ci(
            paired_difference_ci, level(t, "none", h, "max") - single, level(t, "none", h, "max", True) - single_r, s=s)
        for c in s.cot:
            if c == "none":
                continue
            d = level(t, c, h, s.cot_summary) - level(t, "none", h, "max")
            d_r = level(t, c, h, s.cot_summary, True) - level(t, "none", h, "max", True)
            out["cot_change"][f"hop{h}/{c}"] = _ci(mean_ci, d, s=s)
            out["cot_change"][f"hop{h}/{c}_random"] = _ci(mean_ci, d_r, s=s)
            out["cot_change"][f"hop{h}/{c}_vs_random"] = _ci(paired_difference_ci, d, d_r, s=s)
    out["taus"] = list(map(float, TAUS))
    return out


PATTERNS = ("both recalled", "hop 1 not recalled", "hop 2 not recalled", "neither recalled")


def outcome_numbers(t: pd.DataFrame, s: StudyConfig) -> dict:
    """Claim 2: correct/wrong x recall pattern (no CoT), the share of errors with a recall failure, shortcuts."""
    r1, d1 = recall_flags(t, "none", 1, s.tau, s.cot_summary)
    r2, d2 = recall_flags(t, "none", 2, s.tau, s.cot_summary)
    both = d1 & d2
    correct = t["none_correct"].to_numpy(bool)
    pattern = np.where(r1 & r2, 0, np.where(~r1 & r2, 1, np.where(r1 & ~r2, 2, 3)))
    table = {o: {p: int(((correct == (o == "correct")) & both & (pattern == i)).sum()) for i, p in
                 enumerate(PATTERNS)} for o in ("correct", "wrong")}
    wrong, failure = both & ~correct, both & ~(r1 & r2)
    return {
        "table": table, "n_defined": int(both.sum()), "n_undefined": int((~both).sum()),
        "accuracy": _ci(share_ci, correct, s=s),
        "errors_with_recall_failure": _ci(conditional_share_ci, failure, wrong, s=s),
        "correct_with_recall_failure": _ci(conditional_share_ci, failure, both & correct, s=s),
        "shortcut_share_of_correct": _ci(conditional_share_ci, ~r1, both & correct, s=s),
        "shortcut_count": int((both & correct & ~r1).sum()),
        "answers_bridge_share": _ci(share_ci, t["none_says_bridge"].to_numpy(bool), s=s),
        "accuracy_by_cot": {c: _ci(share_ci, t[f"{c}_correct"].to_numpy(bool), s=s) for c in s.cot},
        "errors_with_recall_failure_by_tau": {f"{tau:.2f}": _failure_share(t, tau, s) for tau in TAUS},
    }


def _failure_share(t: pd.DataFrame, tau: float, s: StudyConfig) -> float | None:
    """Share of errors (no CoT) with a recall failure of either hop at threshold tau (the headline's tau curve)."""
    r1, d1 = recall_flags(t, "none", 1, tau, s.cot_summary)
    r2, d2 = recall_flags(t, "none", 2, tau, s.cot_summary)
    wrong = d1 & d2 & ~t["none_correct"].to_numpy(bool)
    return float((~(r1 & r2))[wrong].mean()) if wrong.any() else None


def intervention_numbers(t: pd.DataFrame, s: StudyConfig) -> dict:
    """Claim 4: change of P(answer) and of accuracy under each intervention, against the random control."""
    out = {}
    base_p, base_c = t["base_p"].to_numpy(np.float64), t["base_correct"].to_numpy(np.float64)
    for tg in TARGETS:
        for k in KINDS:
            p = t[f"{tg}_{k}_p"].to_numpy(np.float64)
            c = t[f"{tg}_{k}_correct"].to_numpy(np.float64)
            out[f"{tg}/{k}"] = {"delta_p": _ci(paired_difference_ci, p, base_p, s=s),
                                "delta_accuracy": _ci(paired_difference_ci, c, base_c, s=s),
                                "n": int(np.isfinite(p).sum())}
        for k in ("enhance", "suppress"):
            out[f"{tg}/{k}_vs_random"] = {"delta_p": _ci(paired_difference_ci, t[f"{tg}_{k}_p"],
                                                         t[f"{tg}_random_{k}_p"], s=s)}
    return out


def conflict_numbers(t: pd.DataFrame, s: StudyConfig) -> dict:
    """Claim 5: the true fact's score with a counterfactual hop stated first, against no conflict."""
    out = {}
    for h in HOPS:
        plain, conf = level(t, "none", h, "max"), t[f"conflict{h}_R"].to_numpy(np.float64)
        plain_r, conf_r = level(t, "none", h, "max", True), t[f"conflict{h}_R_random"].to_numpy(np.float64)
        single = t[f"single{h}"].to_numpy(np.float64)
        keep = np.isfinite(conf) & np.isfinite(plain) & np.isfinite(single)
        follows = t[f"conflict{h}_follows"].to_numpy(str)
        asked = follows != ""
        out[f"hop{h}"] = {
            "change": _ci(paired_difference_ci, conf, plain, s=s),
            "change_random": _ci(paired_difference_ci, conf_r, plain_r, s=s),
            "change_vs_random": _ci(paired_difference_ci, conf - plain, conf_r - plain_r, s=s),
            "recalled_plain": _ci(share_ci, plain[keep] >= s.tau * single[keep], s=s),
            "recalled_conflict": _ci(share_ci, conf[keep] >= s.tau * single[keep], s=s),
            "follows": {f: _ci(share_ci, follows[asked] == f, s=s) for f in ("true", "counterfactual", "other")},
            "n": int(keep.sum()),
        }
    return out


def analyse(table: pd.DataFrame, s: StudyConfig) -> dict:
    """Every number of the study from the item table."""
    return {"n_items": int(len(table)),
            "empty_kn": {f"hop{h}": int((table[f"kn{h}"] == 0).sum()) for h in HOPS},
            "kn_size_mean": {f"hop{h}": float(table[f"kn{h}"].mean()) if len(table) else None for h in HOPS},
            "recall": recall_numbers(table, s), "outcomes": outcome_numbers(table, s),
            "interventions": intervention_numbers(table, s), "conflict": conflict_numbers(table, s)}
