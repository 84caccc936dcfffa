"""The study's settings: checked when built (before the model or dataset loads), the CLI derived from the
fields, `--config` replays, typed results with a schema version, items it cannot measure named up front."""

from __future__ import annotations

import dataclasses
import json
import typing

import numpy as np
import pandas as pd
import pytest

from jaxkn.attribution import AttributionConfig
from jaxkn.experiments import two_hop
from jaxkn.experiments.cli import parser, settings_from_args
from jaxkn.experiments.results import (
    AnswerRead,
    ConditionOutcome,
    FactResult,
    ItemResult,
    SchemaError,
    SingleLevels,
    from_json,
    to_json,
)
from jaxkn.experiments.settings import StudyConfig
from jaxkn.experiments.store import ResultsFolderError, ResultStore, write_json

MISSING_MODEL = "/nonexistent/model/folder"


@pytest.mark.parametrize("flag, value, named", [
    ("--threshold-t", "1.5", "--threshold-t"), ("--t", "0", "--threshold-t"), ("--decode-mode", "sideways", "decode-mode"),
    ("--site", "bogus", "site"), ("--refine-rule", "loose", "refine-rule"), ("--cot", "none,bogus", "--cot"),
    ("--steps", "0", "steps"), ("--queries-per-hop", "1", "--queries-per-hop"), ("--enhance", "nan", "--enhance"),
    ("--mesh", "3", "mesh"), ("--sharding", "zero3", "sharding"), ("--quadrature", "simpson", "quadrature"),
])
def test_bad_setting_is_refused_before_the_model_loads(flag, value, named, capsys):
    # the model path does not exist: reaching it would give another error
    assert two_hop.main(["--model", MISSING_MODEL, flag, value, "--out", "/nonexistent/out"]) == 2
    err = capsys.readouterr().err
    field = named.strip("-").replace("-", "_")
    assert (named in err or field in err) and MISSING_MODEL not in err, err


def test_help_shows_every_setting_with_its_default_and_doc():
    text = " ".join(parser().format_help().split("options:", 1)[1].split())  # the entries, not the usage line
    for cls in (StudyConfig, AttributionConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] is AttributionConfig:
                continue
            flag = "--" + f.name.replace("_", "-")
            assert flag in text, flag
            at = min(i for i in (text.find(flag + " "), text.find(flag + ",")) if i >= 0)
            assert "(default:" in text[at: at + 600], flag


def test_a_flag_maps_to_its_field_and_attribution_settings_nest():
    args = parser().parse_args(["--steps", "7", "--quadrature", "right", "--threshold-t", "0.3", "--cot", "few_shot",
                                "--mquake-cloze"])
    s = settings_from_args(args)
    assert s.attribution == AttributionConfig(steps=7, quadrature="right", tolerance=0.01)  # converged preset
    assert s.preset == "converged" and s.preset_overrides == ("quadrature", "steps", "threshold_t")
    assert s.threshold_t == 0.3 and s.cot == ("none", "few_shot") and s.mquake_cloze


def test_config_file_replays_a_summary_and_flags_override_it(tmp_path):
    original = settings_from_args(parser().parse_args(["--limit", "3", "--share-p", "0.75", "--steps", "5",
                                                       "--decode-mode", "cached"]))
    assert original.preset_overrides == ("share_p", "steps")
    path = write_json(tmp_path / "summary.json", {"settings": original.to_dict(), "numbers": {}})
    assert settings_from_args(parser().parse_args(["--config", str(path)])) == original
    changed = settings_from_args(parser().parse_args(["--config", str(path), "--steps", "9", "--limit", "4"]))
    assert changed == dataclasses.replace(original, limit=4, attribution=AttributionConfig(steps=9, quadrature="gauss_legendre",
                                                                                       tolerance=0.01))
    (tmp_path / "bad.json").write_text('{"settings": {"nonsense": 1}}')
    with pytest.raises(ValueError, match="nonsense"):
        settings_from_args(parser().parse_args(["--config", str(tmp_path / "bad.json")]))


def test_fingerprint_follows_scopes():
    base = StudyConfig()
    assert base.fingerprint("m", "d") == StudyConfig(limit=99, tau=0.7, bootstrap=50).fingerprint("m", "d")
    assert base.fingerprint("m", "d") != base.fingerprint("m", "other data")
    assert base.fingerprint("m", "d") != StudyConfig(decode_mode="all").fingerprint("m", "d")
    assert base.attribution_key("m") == StudyConfig(decode_mode="all").attribution_key("m")
    assert base.attribution_key("m") != StudyConfig(attribution=AttributionConfig(steps=30)).attribution_key("m")
    assert base.attribution_key("m") == StudyConfig(kn_set="refined", shared_s=0.2).attribution_key("m")
    assert StudyConfig(decode_mode="all").differences(base.to_dict()) == ["decode_mode"]


@pytest.mark.parametrize("name", ["converged", "paper", "eleuther", "easyedit", "dkn"])
def test_every_preset_builds_the_study_settings_and_records_its_name(name):
    from jaxkn.presets import PRESETS

    s = settings_from_args(parser().parse_args(["--preset", name]))
    p = PRESETS[name]
    assert s.preset == name and s.preset_overrides == ()
    assert (s.threshold_t, s.share_p, s.kn_set) == (p.threshold_t, p.share_p, p.kn_set)
    assert {k: getattr(s.attribution, k) for k in p.attribution} == dict(p.attribution)
    assert s.to_dict()["preset"] == name


def _fact() -> FactResult:
    return FactResult(queries=["q1", "q2"], targets=["Paris", "Paris"], answer="Paris", aliases=[],
                      triple=["s", "r", "o"], label=["S", "R", "O"], refined=[[0, 1], [2, 3]],
                      loo_refined=[[[0, 1]], []], coarse_sizes=[5, 4], prob_first_token=[0.9, 0.8],
                      completeness_per_layer=[0.01, 0.002, 0.0], points_per_layer=[64, 8, 8], flagged=0,
                      completeness_error_max=0.01)


def test_results_round_trip_through_json_with_their_schema():
    fact = _fact()
    assert from_json(FactResult, json.loads(json.dumps(to_json(fact)))) == fact
    item = ItemResult(case_id=3, two_hop="Q?", bridge="France", answer="Paris", relations=["a", "b"],
                      facts=["f1", "f2"], sets_key="abc",
                      single={"hop1": SingleLevels(R=0.9, paper=None, random=0.1, matched=0.2, D=None, kn=2,
                                                   refined=3, shared_in=1)},
                      cot={"none": AnswerRead(answer_text="Paris", correct=True, reads={"hop1": {"R": 0.5}},
                                              says_bridge=False)},
                      interventions={"base": ConditionOutcome(p_first=0.5, answer_text="Paris", correct=True)},
                      conflict={})
    assert from_json(ItemResult, json.loads(json.dumps(to_json(item)))) == item
    old = {k: v for k, v in to_json(fact).items() if k != "schema"}
    with pytest.raises(SchemaError, match="another version"):
        from_json(FactResult, old, "facts/x.json")
    with pytest.raises(SchemaError, match="ItemResult"):
        from_json(ItemResult, to_json(fact))


def test_a_folder_of_an_older_version_is_refused(tmp_path):
    write_json(tmp_path / "run.json", {"fingerprint": "abc", "model_id": "m"})  # the first version's run.json
    with pytest.raises(ResultsFolderError, match="another version"):
        ResultStore(tmp_path, "abc", "m", resume=True)


def _mquake_case(case_id: int, cloze: bool = True) -> dict:
    hops = [{"question": "What is the capital of France?", "answer": "Paris", "cloze": "The capital of France is"},
            {"question": "Which country is Paris the capital of?", "answer": "France",
             "cloze": "Paris is the capital of"}]
    return {"case_id": case_id, "single_hops": hops, "questions": ["Which country is the capital of France in?"],
            "orig": {"triples": [["Q142", "P36", "Q90"], ["Q90", "P1376", "Q142"]],
                     "triples_labeled": [["France", "capital", "Paris"], ["Paris", "capital of", "France"]]}}


@pytest.mark.slow
def test_mquake_items_with_one_question_per_hop_stop_before_attribution(tiny_checkpoint, tmp_path, capsys):
    data = tmp_path / "mquake.json"
    data.write_text(json.dumps([_mquake_case(7), _mquake_case(9)]))
    out = tmp_path / "out"
    assert two_hop.main(["--model", str(tiny_checkpoint), "--dataset", str(data), "--out", str(out),
                         "--limit", "2"]) == 2
    err = capsys.readouterr().err
    assert "no item can be measured" in err and "case 7" in err and "case 9" in err and "at least 2" in err
    assert not (out / "facts").exists()  # nothing was attributed


@pytest.mark.slow
def test_mquake_items_are_measured_with_the_cloze_setting(tiny_checkpoint, tmp_path):
    """With --mquake-cloze each hop has its question and its cloze statement: two queries, so the out-of-sample
    single-hop level is defined. Answers are what the tiny random model itself says (it knows nothing else)."""
    import jaxkn
    from jaxkn.data import builtin_items, format_prompt
    from jaxkn.generate import text_generator

    cfg, params, tokenizer = jaxkn.load_model(tiny_checkpoint)
    generate = text_generator(cfg, params, tokenizer, max_new_tokens=3, batch_size=4)
    cases = []
    for item in builtin_items()[:8]:
        said = [a.strip() for a in generate([format_prompt(item.fact1_query[0]), format_prompt(item.fact2_query[0])])]
        if all(said):
            case = _mquake_case(item.case_id)
            case["questions"] = [item.two_hop]
            for hop, query, answer in zip(case["single_hops"], (item.fact1_query, item.fact2_query), said):
                hop.update(question=query[0], cloze=query[1], answer=answer)
            case["orig"] = {"triples": [list(t) for t in item.two_hop_id],
                            "triples_labeled": [list(t) for t in item.two_hop_label]}
            cases.append(case)
    assert len(cases) >= 2, "the tiny model gave no usable answers"
    data = tmp_path / "mquake.json"
    data.write_text(json.dumps(cases[:3]))
    out = tmp_path / "out"
    assert two_hop.main(["--model", str(tiny_checkpoint), "--dataset", str(data), "--out", str(out), "--limit", "2",
                         "--mquake-cloze", "--queries-per-hop", "2", "--steps", "2", "--cot", "none",
                         "--answer-tokens", "5", "--bootstrap", "50", "--batch-size", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["filter"]["studied"] >= 1 and summary["skipped"]["count"] == 0
    facts = [json.loads(p.read_text()) for p in (out / "facts").glob("*.json")]
    assert facts and all(len(f["queries"]) == 2 for f in facts)
    table = pd.read_csv(out / "items.csv")
    assert np.isfinite(table[["single_R1", "single_R2"]].to_numpy()).any()  # out-of-sample levels are defined
