"""From typed item results to the study's one table (items.csv / items.parquet), and the facts table.

One row per item; the columns are the contract between the stages and the analysis (`experiments.analysis`),
which computes every number from this table alone, so a reader can recompute them from the CSV. h is the hop
(1, 2), c a CoT setting ("none", "zero_shot", "few_shot"):
- case_id, relation1, relation2, answer, bridge, fact1, fact2 (fact keys: items sharing a fact are not independent)
- kn{h}, refined{h}, shared_in{h}: sizes of the KN set used, of the refined set, of its shared neurons
- single_R{h}, single_paper{h}, single_random{h}, single_matched{h}, single_D{h}: leave-one-out single-hop levels
- {c}_h{h}_{stat} and {c}_h{h}_{stat}_mean for stat in R, paper, D, random, matched, wrong (no CoT: the last prompt
  token, both columns equal; CoT: the max and the mean over the answer's generated positions)
- {c}_correct, {c}_answer, none_says_bridge
- base_p, base_correct; {t}_{null}_{kind}_p / _correct for t in hop1, hop2, both, null in own, random, matched,
  wrong, shared, kind in enhance, suppress (draws of matched / wrong averaged)
- conflict{h}_R, conflict{h}_D, conflict{h}_matched, conflict{h}_follows, conflict{h}_counterfactual
NaN marks what is undefined (a hop without KNs, a fact with no wrong-fact null, a condition that does not exist).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jaxkn.experiments.item_stage import KINDS, NULLS, STATS, TARGETS
from jaxkn.experiments.results import FactResult, FactSets, ItemResult

HOPS = (1, 2)


def _num(value) -> float:
    return np.nan if value is None else float(value)


def item_row(res: ItemResult, cot_settings) -> dict:
    """One item's result as a flat row (module docstring)."""
    row = {"case_id": res.case_id, "relation1": res.relations[0], "relation2": res.relations[1],
           "answer": res.answer, "bridge": res.bridge, "fact1": res.facts[0], "fact2": res.facts[1]}
    for h in HOPS:
        single = res.single[f"hop{h}"]
        row.update({f"kn{h}": single.kn, f"refined{h}": single.refined, f"shared_in{h}": single.shared_in})
        for stat in ("R", "paper", "random", "matched", "D"):
            row[f"single_{stat}{h}"] = _num(getattr(single, stat))
    for c in cot_settings:
        read = res.cot.get(c)
        row[f"{c}_correct"] = bool(read.correct) if read else False
        row[f"{c}_answer"] = read.answer_text if read else ""
        for h in HOPS:
            stats = read.reads.get(f"hop{h}", {}) if read else {}
            for stat in STATS:
                row[f"{c}_h{h}_{stat}"] = _num(stats.get(stat))
                row[f"{c}_h{h}_{stat}_mean"] = _num(stats.get(f"{stat}_mean", stats.get(stat)))
    none = res.cot.get("none")
    row["none_says_bridge"] = bool(none.says_bridge) if none else False
    iv = res.interventions
    row["base_p"], row["base_correct"] = iv["base"].p_first, float(iv["base"].correct)
    for t in TARGETS:
        for null in NULLS:
            for kind in KINDS:
                draws = [v for k, v in iv.items() if k.startswith(f"{t}/{null}#") and k.endswith(f"/{kind}")]
                row[f"{t}_{null}_{kind}_p"] = float(np.mean([d.p_first for d in draws])) if draws else np.nan
                row[f"{t}_{null}_{kind}_correct"] = float(np.mean([d.correct for d in draws])) if draws else np.nan
    for h in HOPS:
        conflict = res.conflict.get(f"hop{h}")
        stats = conflict.reads.get(f"hop{h}", {}) if conflict else {}
        row[f"conflict{h}_R"], row[f"conflict{h}_D"] = _num(stats.get("R")), _num(stats.get("D"))
        row[f"conflict{h}_matched"] = _num(stats.get("matched"))
        row[f"conflict{h}_follows"] = conflict.follows if conflict else ""
        row[f"conflict{h}_counterfactual"] = conflict.counterfactual if conflict else ""
    return row


def item_table(results: list[ItemResult], cot_settings) -> pd.DataFrame:
    return pd.DataFrame([item_row(r, cot_settings) for r in results])


def facts_table(facts: dict, sets: dict, keys: dict) -> pd.DataFrame:
    """One row per studied fact (neuron lists as list columns, for facts.parquet)."""
    rows = []
    for triple, fact in facts.items():
        fs: FactSets = sets[triple]
        f: FactResult = fact
        rows.append({"fact": keys[triple], "subject": f.triple[0], "relation": f.triple[1], "object": f.triple[2],
                     "label": " / ".join(f.label), "answer": f.answer, "targets": list(f.targets),
                     "refined": [list(n) for n in f.refined], "neurons": [list(n) for n in fs.neurons],
                     "shared_in": [list(n) for n in fs.shared_in], "n_refined": len(f.refined),
                     "n_neurons": len(fs.neurons), "n_wrong_fact_null": len(fs.wrong),
                     "single_R": _num(fs.single_R), "single_D": _num(fs.single_D),
                     "single_paper": _num(fs.single_paper), "single_matched": _num(fs.single_matched),
                     "single_random": _num(fs.single_random), "completeness_error_max": f.completeness_error_max,
                     "flagged": f.flagged, "points_max": max(f.points_per_layer) if f.points_per_layer else 0})
    return pd.DataFrame(rows)
