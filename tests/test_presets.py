"""Presets of METHOD §10 as data: the five bundles as listed, overrides that say what they changed."""

import dataclasses

import pytest

from jaxkn.attribution import AttributionConfig
from jaxkn.presets import DEFAULT_PRESET, PRESETS, Preset, resolve


def test_presets_are_as_method_lists_them():
    assert set(PRESETS) == {"converged", "paper", "eleuther", "easyedit", "dkn"} and DEFAULT_PRESET == "converged"
    table = {name: (p.attribution["site"], p.attribution["quadrature"], p.attribution["steps"],
                    p.attribution["tolerance"], p.threshold_t, p.refine_rule, p.share_p, p.kn_set, p.score)
             for name, p in PRESETS.items()}
    assert table["converged"][3:] == (0.01, 0.2, "fraction", 0.5, "specific", "specific")
    assert table["converged"][0] == "product" and PRESETS["converged"].attribution["baseline"] == "zero"
    assert table["paper"] == ("product", "left", 20, None, 0.2, "fraction", 0.5, "refined", "R")
    assert table["eleuther"][1:7] == ("linspace", 20, None, 0.3, "strict", 0.5)
    assert table["easyedit"][:6] == ("gate", "left", 1, None, 0.2, "none") and table["easyedit"][7] == "coarse"
    assert table["dkn"][:7] == ("gate", "linspace", 10, None, 0.2, "strict", 0.3)
    assert all(p.shared_s == 0.1 for p in PRESETS.values())


def test_preset_attribution_values_build_a_config():
    fields = {f.name for f in dataclasses.fields(AttributionConfig)}
    for preset in PRESETS.values():
        kw = {k: v for k, v in preset.attribution.items() if k in fields}  # tolerance once the config has it
        config = AttributionConfig(**kw)
        assert (config.site, config.quadrature, config.steps) == tuple(preset.attribution[k] for k in
                                                                       ("site", "quadrature", "steps"))


def test_presets_are_frozen_values():
    paper = PRESETS["paper"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        paper.threshold_t = 0.3
    with pytest.raises(TypeError):
        paper.attribution["steps"] = 50
    assert hash(paper) == hash(PRESETS["paper"]) and {paper: 1}[PRESETS["paper"]] == 1


def test_overrides_win_and_are_reported():
    values, overridden = resolve("paper", {"steps": 50, "threshold_t": 0.3, "kn_set": "refined"})
    assert values["preset"] == "paper" and values["attribution"]["steps"] == 50 and values["threshold_t"] == 0.3
    assert overridden == ["steps", "threshold_t"]  # kn_set equals the preset's: nothing changed
    nested, changed = resolve("dkn", {"attribution": {"site": "product"}, "share_p": 0.5})
    assert nested["attribution"]["site"] == "product" and nested["share_p"] == 0.5
    assert changed == ["share_p", "site"]
    assert resolve("converged", {}) == (PRESETS["converged"].values(), [])
    assert PRESETS["paper"].attribution["steps"] == 20  # the preset itself is untouched


def test_bad_presets_and_overrides():
    with pytest.raises(ValueError, match="unknown preset 'torch'"):
        resolve("torch", {})
    with pytest.raises(ValueError, match=r"unknown settings \['stepz'\]"):
        resolve("paper", {"stepz": 50})
    with pytest.raises(ValueError, match="refine_rule='median'"):
        resolve("paper", {"refine_rule": "median"})
    with pytest.raises(ValueError, match="coarse"):
        resolve("easyedit", {"kn_set": "specific"})  # no refinement: there is no refined set to subtract from
    with pytest.raises(ValueError, match="must lie in"):
        Preset(name="x", attribution={}, threshold_t=1.5, refine_rule="fraction", share_p=0.5, shared_s=0.1,
               kn_set="refined", score="R")
