"""Every number of the study from one table (one row per item), each claim on both scores and both CoT summaries.

`analyse(table, settings)` reads only the item table (columns: the contract in `experiments.report`'s module
docstring), so a reader can recompute every number from items.csv / items.parquet.

Conventions (METHOD §5-§6, revision 2026-12-01):
- Scores: "specific" reads D = R_own - mean R of the wrong-fact sets, so D is itself against the wrong-fact null;
  "R" reads the relative score, beside its matched random null (same layer, same |abar| decile) and the
  same-count random set.
- Recalled(hop) := two-hop level >= tau * single-hop level; for D (recalled-specific) defined only where the
  single-hop D > 0 (otherwise the fact shows no specific signal: skipped and counted).
- CoT summaries: "max" reads `{c}_h{h}_{stat}`, "mean" reads `{c}_h{h}_{stat}_mean` (equal for "none").
- Effects are paired differences per item with a cluster-bootstrap interval: items that share a fact (either
  hop) are one cluster (`stats.fact_clusters`), and a resample draws whole clusters.
- Shares are Wilson intervals with their real denominator, "too few to tell" below 10 (`stats.wilson_share`);
  a Wilson interval treats items as independent.
- Each effect cell records the direction the paper expects (`direction`: +1 / -1) and its nulls, so the
  verdicts (`experiments.report.verdicts`) are a function of these numbers alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jaxkn.experiments.settings import StudyConfig
from jaxkn.experiments.stats import cluster_mean_fast, conditional_share_wilson, fact_clusters, share_wilson

HOPS = (1, 2)
TARGETS = ("hop1", "hop2", "both")
KINDS = ("enhance", "suppress")
SCORES = ("specific", "R")
SUMMARIES = ("max", "mean")
TAUS = tuple(float(t) for t in np.round(np.arange(0.25, 1.0001, 0.05), 2))
PATTERNS = ("both recalled", "hop 1 not recalled", "hop 2 not recalled", "neither recalled")

STAT = {"specific": "D", "R": "R"}  # the column stat each score reads
# The nulls a score's effects are compared with: D already subtracts the wrong-fact null, R carries two.
SCORE_NULLS = {"specific": {}, "R": {"matched_random": "matched", "random": "random"}}
HEADLINE_NULL = {"specific": "wrong_fact", "R": "matched_random"}
INTERVENTION_NULLS = {"wrong_fact": "wrong", "matched_random": "matched", "random": "random", "shared": "shared"}


def headline_score(s: StudyConfig) -> str:
    """The score of the headline verdicts (`settings.score`; "specific" where the settings predate the field)."""
    return getattr(s, "score", "specific")


def item_clusters(t: pd.DataFrame) -> np.ndarray:
    """Cluster label per item: connected components of items linked by a shared fact (hop 1 or hop 2)."""
    return fact_clusters([(f"f:{a}", f"f:{b}") for a, b in zip(t["fact1"].astype(str), t["fact2"].astype(str))])


def _col(t: pd.DataFrame, name: str) -> np.ndarray:
    """A float column; a column the table lacks (e.g. a condition the run did not measure) reads as NaN."""
    return t[name].to_numpy(np.float64) if name in t else np.full(len(t), np.nan)


def two_hop(t: pd.DataFrame, cot: str, h: int, stat: str, summary: str) -> np.ndarray:
    """The two-hop read of `stat` for hop h (no CoT: last token; CoT: max or mean over generated positions)."""
    plain = f"{cot}_h{h}_{stat}"
    mean = plain + "_mean"
    return _col(t, mean if summary == "mean" and (cot != "none" or mean in t) else plain)


def single(t: pd.DataFrame, h: int, stat: str) -> np.ndarray:
    """The single-hop (leave-one-out) level of `stat` for hop h."""
    return _col(t, f"single_{stat}{h}")


def recall_flags(t: pd.DataFrame, cot: str, h: int, stat: str, tau: float, summary: str):
    """(recalled [N] bool, defined [N] bool); for D only items with single-hop D > 0 are defined."""
    two, one = two_hop(t, cot, h, stat, summary), single(t, h, stat)
    defined = np.isfinite(two) & np.isfinite(one)
    if stat == "D":
        defined &= one > 0
    return defined & (two >= tau * one), defined


class Context:
    """What every number needs: the table, the settings, the item clusters and the bootstrap seed."""

    def __init__(self, table: pd.DataFrame, s: StudyConfig):
        self.t, self.s = table, s
        self.clusters = item_clusters(table)

    def ci(self, values) -> dict:
        """Cluster-bootstrap interval of the mean of `values` (NaN entries, undefined items, dropped)."""
        return cluster_mean_fast(values, self.clusters, n_boot=self.s.bootstrap,
                                 seed=self.s.seed + self.s.seed_bootstrap).as_dict()

    def effect(self, own, nulls: dict, direction: int, **extra) -> dict:
        """A paired effect per item, each null's same effect, and own minus null (the effect beyond it)."""
        own = np.asarray(own, np.float64)
        return {"effect": self.ci(own), "direction": direction, **extra,
                "nulls": {name: {"effect": self.ci(v), "beyond": self.ci(own - v)} for name, v in nulls.items()}}


def _share(flags, defined) -> dict:
    return share_wilson(np.where(defined, np.asarray(flags, np.float64), np.nan)).as_dict()


def recall_numbers(x: Context, score: str, summary: str) -> dict:
    """Claim 1 (and the recall reads under each CoT setting): levels, the drop, recall beyond the null, shares."""
    t, s, stat = x.t, x.s, STAT[score]
    out = {}
    for h in HOPS:
        one = single(t, h, stat)
        for c in s.cot:
            two = two_hop(t, c, h, stat, summary)
            nulls_two = {n: two_hop(t, c, h, col, summary) for n, col in SCORE_NULLS[score].items()}
            nulls_drop = {n: v - single(t, h, SCORE_NULLS[score][n]) for n, v in nulls_two.items()}
            recalled, defined = recall_flags(t, c, h, stat, s.tau, summary)
            out[f"hop{h}/{c}"] = {
                "single": x.ci(one), "two_hop": x.ci(two),
                # D's drop means something only where the single hop shows a specific signal at all
                "drop": x.effect(two - one, nulls_drop, -1, requires=x.ci(one) if stat == "D" else None),
                "recall": x.effect(two, nulls_two, +1),
                "recalled_share": _share(recalled, defined),
                "null_recalled_share": {n: _share(*recall_flags(t, c, h, col, s.tau, summary))
                                        for n, col in SCORE_NULLS[score].items()},
                "undefined": int((~defined).sum()),
                # the wrong-fact sets' own R beside every score (D subtracts it): format neurons show up here
                "wrong_fact_R": {"single": x.ci(single(t, h, "R") - single(t, h, "D")),
                                 "two_hop": x.ci(two_hop(t, c, h, "wrong", summary))},
            }
    return out


def tau_curves(x: Context, score: str, summary: str) -> dict:
    """Share recalled at each tau (0.25 to 1.0), per hop and CoT setting, with the score's nulls beside it."""
    t, s, stat = x.t, x.s, STAT[score]
    out = {}
    for h in HOPS:
        for c in s.cot:
            for name, col in {"own": stat, **SCORE_NULLS[score]}.items():
                curve = []
                for tau in TAUS:
                    recalled, defined = recall_flags(t, c, h, col, tau, summary)
                    curve.append(float(recalled[defined].mean()) if defined.any() else None)
                out[f"hop{h}/{c}/{name}"] = curve
    return out


def outcome_numbers(x: Context, score: str, summary: str) -> dict:
    """Claim 2 per CoT setting: correct/wrong x recall pattern, the share of errors with a recall failure."""
    t, s, stat = x.t, x.s, STAT[score]
    out = {}
    for c in s.cot:
        r1, d1 = recall_flags(t, c, 1, stat, s.tau, summary)
        r2, d2 = recall_flags(t, c, 2, stat, s.tau, summary)
        both = d1 & d2
        correct = t[f"{c}_correct"].to_numpy(bool)
        pattern = np.where(r1 & r2, 0, np.where(~r1 & r2, 1, np.where(r1 & ~r2, 2, 3)))
        failure = ~(r1 & r2)
        by_tau = {}
        for tau in TAUS:
            q1, e1 = recall_flags(t, c, 1, stat, tau, summary)
            q2, e2 = recall_flags(t, c, 2, stat, tau, summary)
            by_tau[f"{tau:.2f}"] = conditional_share_wilson(~(q1 & q2), e1 & e2 & ~correct).as_dict()
        out[c] = {
            "table": {o: {p: int(((correct == (o == "correct")) & both & (pattern == i)).sum())
                          for i, p in enumerate(PATTERNS)} for o in ("correct", "wrong")},
            "n_defined": int(both.sum()), "n_undefined": int((~both).sum()),
            "accuracy": share_wilson(correct).as_dict(),
            "errors_with_recall_failure": conditional_share_wilson(failure, both & ~correct).as_dict(),
            "correct_with_recall_failure": conditional_share_wilson(failure, both & correct).as_dict(),
            "shortcuts": conditional_share_wilson(~r1, both & correct).as_dict(),
            "errors_with_recall_failure_by_tau": by_tau,
        }
    return out


def cot_numbers(x: Context, score: str, summary: str) -> dict:
    """Claim 3: the change of each hop's two-hop level under CoT against no CoT, beside the nulls' change."""
    t, s, stat = x.t, x.s, STAT[score]
    out = {}
    for h in HOPS:
        base = two_hop(t, "none", h, stat, summary)
        for c in s.cot[1:]:
            nulls = {n: two_hop(t, c, h, col, summary) - two_hop(t, "none", h, col, summary)
                     for n, col in SCORE_NULLS[score].items()}
            out[f"hop{h}/{c}"] = x.effect(two_hop(t, c, h, stat, summary) - base, nulls, +1)
    return out


def conflict_numbers(x: Context, score: str) -> dict:
    """Claim 5: the true fact's level with a counterfactual hop stated first, against the plain question."""
    t, stat = x.t, STAT[score]
    out = {}
    for h in HOPS:
        change = _col(t, f"conflict{h}_{stat}") - two_hop(t, "none", h, stat, "max")
        nulls = {n: _col(t, f"conflict{h}_{col}") - two_hop(t, "none", h, col, "max")
                 for n, col in SCORE_NULLS[score].items() if f"conflict{h}_{col}" in t}
        out[f"hop{h}"] = x.effect(change, nulls, +1)
    return out


def follows_numbers(t: pd.DataFrame) -> dict:
    """Which chain the answer follows under each conflict: shares of the asked items (Wilson)."""
    out = {}
    for h in HOPS:
        follows = t[f"conflict{h}_follows"].fillna("").astype(str).to_numpy() if f"conflict{h}_follows" in t \
            else np.array([""] * len(t))
        asked = follows != ""
        out[f"hop{h}"] = {f: conditional_share_wilson(follows == f, asked).as_dict()
                          for f in ("true", "counterfactual", "other")}
    return out


def intervention_numbers(x: Context) -> dict:
    """Claim 4: change of P(answer) and accuracy under each intervention, own set against every null set."""
    t = x.t
    base_p, base_c = _col(t, "base_p"), _col(t, "base_correct")
    out = {}
    for tg in TARGETS:
        for k, direction in (("enhance", +1), ("suppress", -1)):
            own_p = _col(t, f"{tg}_own_{k}_p")
            nulls = {n: _col(t, f"{tg}_{col}_{k}_p") - base_p for n, col in INTERVENTION_NULLS.items()}
            out[f"{tg}/{k}"] = x.effect(own_p - base_p, nulls, direction,
                                        accuracy=x.ci(_col(t, f"{tg}_own_{k}_correct") - base_c),
                                        null_accuracy={n: x.ci(_col(t, f"{tg}_{col}_{k}_correct") - base_c)
                                                       for n, col in INTERVENTION_NULLS.items()})
    return out


def paper_score_numbers(x: Context) -> dict:
    """The paper's KN score (mean activation): its single-hop level and how often that level is negative."""
    t = x.t
    out = {}
    for h in HOPS:
        one = single(t, h, "paper")
        finite = one[np.isfinite(one)]
        out[f"hop{h}"] = {"single": x.ci(one), "negative": int((finite < 0).sum()), "n": int(len(finite)),
                          "two_hop": {c: x.ci(two_hop(t, c, h, "paper", "max")) for c in x.s.cot}}
    return out


def score_numbers(x: Context, score: str) -> dict:
    """Claims 1, 2, 3 and 5 and the tau curves on one score, under both CoT summaries."""
    return {summary: {"recall": recall_numbers(x, score, summary), "outcomes": outcome_numbers(x, score, summary),
                      "cot": cot_numbers(x, score, summary), "tau_curve": tau_curves(x, score, summary)}
            for summary in SUMMARIES} | {"conflict": conflict_numbers(x, score)}


def analyse(table: pd.DataFrame, s: StudyConfig) -> dict:
    """Every number of the study from the item table (module docstring); {"n_items": 0} for an empty table."""
    if not len(table):
        return {"n_items": 0}
    x = Context(table.reset_index(drop=True), s)
    return {
        "n_items": int(len(table)),
        "headline": {"score": headline_score(s), "cot_summary": s.cot_summary, "tau": s.tau, "cot": list(s.cot)},
        "resampling": {"unit": "fact cluster", "clusters": int(len(np.unique(x.clusters))),
                       "items": int(len(table)), "resamples": s.bootstrap,
                       "rule": "items linked by a shared fact (hop 1 or hop 2) form one cluster; a resample draws "
                               "whole clusters with replacement"},
        "empty_kn": {f"hop{h}": int((_col(table, f"kn{h}") == 0).sum()) for h in HOPS},
        "kn_size_mean": {f"hop{h}": float(np.nanmean(_col(table, f"kn{h}"))) for h in HOPS},
        "specific_undefined": {f"hop{h}": int((~(single(table, h, "D") > 0)).sum()) for h in HOPS},
        "scores": {score: score_numbers(x, score) for score in SCORES},
        "interventions": intervention_numbers(x),
        "follows": follows_numbers(table),
        "paper_score": paper_score_numbers(x),
        "accuracy_by_cot": {c: share_wilson(table[f"{c}_correct"].to_numpy(bool)).as_dict() for c in s.cot},
        "answers_bridge": share_wilson(table["none_says_bridge"].to_numpy(bool)).as_dict()
        if "none_says_bridge" in table else None,
    }
