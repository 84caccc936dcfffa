"""Two runs side by side: every claim under both scores and summaries, the settings that differ, the facts."""

from __future__ import annotations

import json

from jaxkn.experiments import compare


def _summary(preset: str, verdict: str, tolerance) -> dict:
    cell = {"verdict": verdict, "null": "wrong_fact"}
    verdicts = {k: {"by_score": {s: {m: cell for m in ("max", "mean")} for s in ("specific", "R")}}
                for k in compare.CLAIMS}
    return {"settings": {"preset": preset, "attribution": {"tolerance": tolerance, "steps": 20}, "mesh": None},
            "verdicts": verdicts, "filter": {"studied": 24}, "facts": {"unique": 46, "empty_kn": 3},
            "attribution": {"completeness": {"max": 1.88 if tolerance is None else 0.0099, "median": 0.01,
                                             "flagged_layers": 0}},
            "neurons": {"shared": [{"neuron": [0, 156], "facts": 45}]}, "numbers": {"kn_size_mean": {"hop1": 4.5}}}


def test_comparison_names_every_claim_the_differing_settings_and_the_facts(tmp_path, capsys):
    for name, s in (("paper_run", _summary("paper", "reproduced", None)),
                    ("default_run", _summary("converged", "not beyond the wrong-fact null", 0.01))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
    out = tmp_path / "cmp.md"
    assert compare.main([str(tmp_path / "paper_run"), str(tmp_path / "default_run"), "--out", str(out)]) == 0
    text = out.read_text()
    for title in compare.CLAIMS.values():
        assert f"## Claim {title}" in text
    assert "| specific, mean | reproduced (vs wrong_fact) | not beyond the wrong-fact null (vs wrong_fact) |" in text
    assert "| attribution.tolerance | None | 0.01 |" in text and "| preset | paper | converged |" in text
    assert "| IG completeness error, max | 1.88 | 0.0099 |" in text
    assert compare.main([str(tmp_path / "missing"), str(tmp_path / "default_run")]) == 2
    assert "no summary.json" in capsys.readouterr().err
