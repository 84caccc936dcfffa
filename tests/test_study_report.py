"""The study's analysis and report on synthetic item tables whose truth the test controls (experiments.analysis,
experiments.report): nulls that can fail, Wilson shares with their real denominator, the cluster bootstrap, and
summary.json / report.md / figures written from the table contract."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from jaxkn.experiments.analysis import analyse, item_clusters, single, two_hop
from jaxkn.experiments.report import verdicts, write_report
from jaxkn.experiments.settings import StudyConfig
from jaxkn.experiments.stats import cluster_mean_ci, cluster_mean_fast, paired_difference_ci
from jaxkn.experiments.store import write_json

N_ITEMS, N_CLUSTERS = 30, 6  # 12 facts: cluster g holds hop-1 fact g and hop-2 fact 6 + g, 5 items each
STATS = ("R", "paper", "D", "random", "matched", "wrong")


def make_table(kind: str = "specific", cot=("none", "zero_shot"), seed: int = 0, relations=("author", "work")):
    """A synthetic item table. kind "specific": the own sets read far above the wrong-fact sets (single-hop
    D ~ 0.6, two-hop D ~ 0.35: a real drop); kind "format": the wrong-fact sets read as high as the own sets
    (D ~ 0), while matched random sets read low, so R alone looks recalled."""
    rng = np.random.default_rng(seed)
    group = np.arange(N_ITEMS) % N_CLUSTERS
    fact_effect = rng.normal(0, 0.15, size=N_CLUSTERS)[group]  # items of one cluster move together
    noise = lambda sd=0.03: rng.normal(0, sd, N_ITEMS)  # noqa: E731
    rows = {"case_id": np.arange(N_ITEMS), "relation1": relations[0], "relation2": relations[1],
            "answer": [f"a{i}" for i in range(N_ITEMS)], "bridge": [f"b{g}" for g in group],
            "fact1": [f"F{g}" for g in group], "fact2": [f"F{6 + g}" for g in group]}
    for h in (1, 2):
        rows |= {f"kn{h}": 5, f"refined{h}": 8, f"shared_in{h}": 3}
        r_single = 1.0 + noise()
        wrong_single = 0.4 + noise() if kind == "specific" else r_single + noise()
        rows |= {f"single_R{h}": r_single, f"single_D{h}": r_single - wrong_single, f"single_paper{h}": noise(1.0),
                 f"single_random{h}": 0.3 + noise(0.3), f"single_matched{h}": 0.3 + noise(0.2)}
        base = 0.75 + fact_effect + noise()
        for c in cot:
            up = {"none": 0.0, "zero_shot": 0.2}.get(c, 0.1)
            for suffix, shift in (("", up), ("_mean", -up)):  # the mean reverses CoT's effect
                r = base + shift
                wrong = 0.4 + noise() if kind == "specific" else r + noise()
                values = {"R": r, "wrong": wrong, "D": r - wrong, "paper": noise(1.0),
                          "random": 0.25 + noise(0.3), "matched": 0.2 + noise(0.2)}
                rows |= {f"{c}_h{h}_{k}{suffix}": rows[f"{c}_h{h}_{k}"] if c == "none" and suffix else v
                         for k, v in values.items()}  # no CoT reads one position: mean = max
        conflict_d = rows[f"none_h{h}_D"] + (0.1 if kind == "specific" else noise())  # format: the wrong sets rise too
        rows |= {f"conflict{h}_R": rows[f"none_h{h}_R"] + 0.1, f"conflict{h}_D": conflict_d,
                 f"conflict{h}_matched": rows[f"none_h{h}_matched"] + noise(),
                 f"conflict{h}_follows": rng.choice(["true", "counterfactual", "other"], N_ITEMS),
                 f"conflict{h}_counterfactual": "cf"}
    for c in cot:
        rows[f"{c}_correct"] = rng.random(N_ITEMS) < 0.6
        rows[f"{c}_answer"] = "x"
    rows["none_says_bridge"] = rng.random(N_ITEMS) < 0.1
    rows |= {"base_p": 0.5 + noise(), "base_correct": 1.0}
    for t in ("hop1", "hop2", "both"):
        for k, own in (("enhance", 0.75), ("suppress", 0.2)):
            # format case: other facts' sets move P(answer) at least as much as the own set
            wrong = (0.52 if k == "enhance" else 0.45) if kind == "specific" else own + (0.03 if own > 0.5 else -0.03)
            for null, p in (("own", own), ("wrong", wrong), ("matched", 0.5), ("random", 0.5), ("shared", 0.4)):
                rows[f"{t}_{null}_{k}_p"] = p + noise()
                rows[f"{t}_{null}_{k}_correct"] = float(p > 0.45)
    return pd.DataFrame(rows)


def settings(cot=("none", "zero_shot")) -> StudyConfig:
    return StudyConfig(cot=cot, bootstrap=300)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoredConfig(StudyConfig):
    """The settings with the headline score field (`score`), as the study's settings carry it."""

    score: str = "R"


def test_format_neurons_look_recalled_on_R_but_not_beyond_the_wrong_fact_null():
    table = make_table("format")
    numbers = analyse(table, settings())
    v = verdicts(numbers)["1_recall_drops"]
    for summary in ("max", "mean"):
        d = v["by_score"]["specific"][summary]
        assert d["null"] == "wrong_fact" and d["verdict"].startswith("not beyond the wrong-fact null")
        assert d["recall"]["verdict"] == "not beyond the wrong-fact null"
        r = v["by_score"]["R"][summary]
        assert r["null"] == "matched_random" and r["recall"]["verdict"] == "recalled beyond the matched random null"
    recall_r = numbers["scores"]["R"]["max"]["recall"]["hop1/none"]
    assert recall_r["recalled_share"]["estimate"] > 0.9  # on R every hop is "recalled" ...
    assert recall_r["null_recalled_share"]["matched_random"]["estimate"] < 0.8  # ... and the weak null says less
    # wrong-fact sets move P(answer) as much as the own set: not beyond the wrong-fact null
    assert verdicts(numbers)["4_enhance_helps_suppress_hurts"]["verdict"] == "not beyond the wrong-fact null"


def test_a_specific_signal_is_reproduced_against_the_wrong_fact_null():
    numbers = analyse(make_table("specific"), settings())
    v = verdicts(numbers)
    assert (v["1_recall_drops"]["verdict"], v["1_recall_drops"]["null"], v["1_recall_drops"]["score"]) == \
        ("reproduced", "wrong_fact", "specific")
    assert v["1_recall_drops"]["recall"]["verdict"] == "recalled beyond the wrong-fact null"
    assert v["4_enhance_helps_suppress_hurts"]["verdict"] == "reproduced"
    assert v["5_conflict_raises_recall"]["verdict"] == "reproduced"
    cot = v["3_cot_raises_recall"]["by_score"]["specific"]
    assert cot["max"]["verdict"] == "reproduced"
    assert cot["mean"]["verdict"] == "not reproduced (the opposite effect)"  # the mean reverses it
    for claim in v.values():
        assert claim["null"] in ("wrong_fact", "matched_random", "random", "none")
        assert claim["score"] in ("specific", "R")


def test_the_headline_follows_the_settings_score_and_names_its_null():
    s = ScoredConfig(cot=("none", "zero_shot"), bootstrap=300, score="R", cot_summary="mean")
    v = verdicts(analyse(make_table("format"), s))
    assert (v["1_recall_drops"]["score"], v["1_recall_drops"]["null"], v["1_recall_drops"]["cot_summary"]) == \
        ("R", "matched_random", "mean")
    assert v["1_recall_drops"]["recall"]["verdict"] == "recalled beyond the matched random null"
    assert v["2_errors_with_recall_failure"]["null"] == "none"  # R's recall flags carry no null
    assert v["3_cot_raises_recall"]["verdict"] == v["3_cot_raises_recall"]["by_score"]["R"]["mean"]["verdict"]


def test_shares_count_errors_with_wilson_intervals_and_say_too_few():
    table = make_table("specific")
    for h in (1, 2):
        table[f"none_h{h}_D"] = table[f"single_D{h}"]  # every hop recalled-specific
    table["none_correct"] = np.arange(N_ITEMS) >= 5  # 5 errors of 30 items
    numbers = analyse(table, settings())
    share = numbers["scores"]["specific"]["max"]["outcomes"]["none"]["errors_with_recall_failure"]
    assert (share["k"], share["n"]) == (0, 5)  # the real denominator: the errors, not the items
    assert share["low"] == 0 and share["high"] == pytest.approx(0.434, abs=1e-3)
    assert share["label"] == "too few to tell"
    assert verdicts(numbers)["2_errors_with_recall_failure"]["verdict"] == "too few to tell"


def test_recalled_specific_is_undefined_where_the_single_hop_shows_no_signal():
    table = make_table("specific")
    table.loc[:9, "single_D1"] = -0.1
    numbers = analyse(table, settings())
    assert numbers["specific_undefined"]["hop1"] == 10
    assert numbers["scores"]["specific"]["max"]["recall"]["hop1/none"]["recalled_share"]["n"] == N_ITEMS - 10


def test_effects_resample_fact_clusters_and_are_wider_than_the_item_bootstrap():
    table = make_table("specific")
    assert len(np.unique(item_clusters(table))) == N_CLUSTERS
    numbers = analyse(table, settings())
    assert numbers["resampling"]["clusters"] == N_CLUSTERS
    drop = numbers["scores"]["R"]["max"]["recall"]["hop1/none"]["drop"]["effect"]
    items = paired_difference_ci(two_hop(table, "none", 1, "R", "max"), single(table, 1, "R"), n_boot=300)
    assert drop["clusters"] == N_CLUSTERS and drop["estimate"] == pytest.approx(items.estimate)
    assert drop["high"] - drop["low"] > 1.5 * (items.high - items.low)


def test_fast_cluster_mean_equals_the_resampling_loop():
    rng = np.random.default_rng(3)
    values = rng.normal(size=40)
    values[[3, 7]] = np.nan
    labels = rng.integers(0, 9, 40)
    fast, slow = cluster_mean_fast(values, labels, n_boot=200, seed=5), cluster_mean_ci(values, labels, n_boot=200,
                                                                                       seed=5)
    assert fast.n == slow.n and fast.clusters == slow.clusters and fast.resamples == slow.resamples
    np.testing.assert_allclose([fast.estimate, fast.low, fast.high], [slow.estimate, slow.low, slow.high],
                               rtol=1e-12)


def _store(root):
    return SimpleNamespace(root=root, write=lambda name, obj: write_json(root / name, obj))


def _facts_summary(tmp_path, n_layers=4, d_ff=16):
    scores = np.random.default_rng(0).normal(size=(n_layers, d_ff))
    np.save(tmp_path / "fact0.npy", scores)
    return {"unique": 12, "empty_kn": 1, "shared": [{"neuron": [0, 3], "facts": 9}, {"neuron": [3, 11], "facts": 4}],
            "shared_rule": "refined for >= max(3, 0.1 * N) facts",
            "kn_counts_per_layer": {"refined": [5, 1, 0, 4], "specific": [3, 1, 0, 3], "shared": [1, 0, 0, 1]},
            "completeness": {"max": 0.02, "median": 0.004, "flagged_layers": 1, "points_per_layer": [64, 20, 20, 20]},
            "completeness_per_layer_max": [0.02, 0.003, 0.002, 0.004],
            "heatmaps": {"F0": {"scores_path": "fact0.npy", "neurons": [[0, 3], [2, 5]], "title": "F0: a -> b"}}}


def _write(tmp_path, table, s):
    facts_table = pd.DataFrame({"fact": ["F0", "F1"], "neurons": [[[0, 3], [2, 5]], [[1, 1]]]})
    return write_report(_store(tmp_path), s, model_id="synthetic", n_dataset=40, selected=list(table["case_id"]),
                        filter_state={"screened": 40, "kept": list(range(len(table))), "pairs": {}, "skipped": []},
                        table=table, facts_summary=_facts_summary(tmp_path), facts_table=facts_table,
                        timings={"facts": 1.0})


SECTIONS = ("## The five claims at a glance", "## How to read this report", "## Claim 1", "## Claim 2", "## Claim 3",
            "## Claim 4", "## Claim 5", "## Shared neurons", "## Knowledge neurons per layer",
            "## Integrated-gradients completeness per layer", "## The paper's KN score", "## Attribution heatmaps")


def test_write_report_writes_summary_keys_report_sections_and_figures(tmp_path):
    table = make_table("specific")
    path = _write(tmp_path, table, settings())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["attribution"]["completeness"]) == {"max", "median", "flagged_layers", "points_per_layer"}
    assert summary["neurons"]["shared"][0] == {"neuron": [0, 3], "facts": 9}
    assert summary["controls"] == ["wrong_fact", "matched_random", "random", "shared"]
    assert "preset" in summary["settings"]
    for claim in summary["verdicts"].values():
        assert {"verdict", "null", "score"} <= set(claim)
    report = path.read_text()
    for section in SECTIONS:
        assert section in report, section
    for score_line in ("specific score D", "relative score R"):
        assert report.count(f"### {score_line}") >= 6  # claims 1-3 under both summaries
    assert "| (0, 3) | 0 | 9 |" in report and "negative for" in report and "F0: a -> b (fact F0)" in report
    for name in ("levels.png", "tau_curve.png", "interventions.png", "shared_neurons.png", "kn_counts_per_layer.png",
                 "completeness_per_layer.png", "heatmap_0.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0, name
    assert len(pd.read_parquet(tmp_path / "items.parquet")) == N_ITEMS
    assert pd.read_parquet(tmp_path / "facts.parquet")["neurons"].map(len).tolist() == [2, 1]
    # every number is recomputable from items.parquet alone
    again = analyse(pd.read_parquet(tmp_path / "items.parquet"), settings())
    assert json.loads(json.dumps(again)) == summary["numbers"]


def test_the_report_runs_with_other_relations_and_no_cot(tmp_path):
    table = make_table("specific", cot=("none",), relations=("capital", "continent"))
    hop1 = [c for c in table.columns if c.endswith("1") and c.startswith("single_") or "_h1_" in c or
            c.startswith(("conflict1_R", "conflict1_D", "conflict1_matched", "hop1_"))]
    table.loc[:2, hop1] = np.nan  # three items whose hop-1 KN set is empty: skipped and counted
    table.loc[:2, "kn1"] = 0
    table.loc[:, [c for c in table.columns if "_shared_" in c]] = np.nan  # no shared neuron in any set
    report = _write(tmp_path, table, settings(cot=("none",))).read_text()
    assert "Empty KN sets: hop 1 3, hop 2 0" in report
    assert "no CoT setting besides none" in report and "## Claim 5" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdicts"]["3_cot_raises_recall"]["verdict"].startswith("not measured")
    assert summary["verdicts"]["1_recall_drops"]["verdict"] == "reproduced"
    assert summary["controls"] == ["wrong_fact", "matched_random", "random"]
    assert summary["numbers"]["scores"]["R"]["max"]["recall"]["hop1/none"]["drop"]["effect"]["n"] == N_ITEMS - 3


def test_an_empty_table_says_so_plainly(tmp_path):
    table = make_table("specific").iloc[:0]
    report = _write(tmp_path, table, settings()).read_text()
    assert "nothing to report" in report
    assert json.loads((tmp_path / "summary.json").read_text())["numbers"] == {"n_items": 0}
    assert verdicts(analyse(table, settings())) == {}
