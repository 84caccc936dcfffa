"""Presets (METHOD.md §10): what other tools run, by name, as plain data.

A preset bundles the attribution settings (keyword values of `jaxkn.attribution.AttributionConfig`: site,
quadrature, steps, tolerance), the coarse threshold t, the refinement rule and its p, the share threshold s of
shared neurons, which KN set the scores and interventions use, and the score. The values are plain (a dict, not
an AttributionConfig), so this module depends on nothing and a preset can name a setting (`tolerance`) before
the config that takes it exists. `resolve` applies overrides and says which settings they changed: a result
records the preset by name and by value, and the overridden settings beside them.

- converged (the study's default): product site, zero baseline, tolerance 0.01, t = 0.2, fraction p = 0.5,
  fact-specific KNs, specific score. Its first round is Gauss-Legendre with 12 points (plus t = 0): on the
  smooth paths of most layers it meets the tolerance where left m = 20 often does not (then every such layer
  is redone with 32 points), so only the layers with a near-jump (SmolLM2's layer 0) are refined.
- paper: left Riemann m = 20, t = 0.2, fraction p = 0.5, all refined KNs, R.
- eleuther: linspace m = 20, t = 0.3, strict p = 0.5 (EleutherAI knowledge-neurons).
- easyedit: gate site, left m = 1, t = 0.2, no refinement (EasyEdit's KN hparams for LLaMA/Mistral/Qwen).
- dkn: gate site, linspace m = 10, t = 0.2, strict p = 0.3 (DKN code).
METHOD §10 names no KN set or score for eleuther, easyedit and dkn: they are those tools' own readings, all
refined KNs (easyedit: the coarse set, it does not refine) and R; their unnamed settings are the library's
defaults (product site, zero baseline, shared-neuron s = 0.1). `share_p` is the refinement's p (a share of a
fact's prompts), `shared_s` the share of facts that makes a neuron shared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

REFINE_RULES = ("fraction", "strict", "dai", "dai_adaptive", "none")
KN_SETS = ("specific", "refined", "coarse")
SCORES = ("specific", "R")
ATTRIBUTION_KEYS = ("site", "baseline", "quadrature", "steps", "tolerance")
FIELDS = ("attribution", "threshold_t", "refine_rule", "share_p", "shared_s", "kn_set", "score")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """A named bundle of settings (METHOD §10).

    Attributes:
      name: how results record it.
      attribution: AttributionConfig keyword values (site, baseline, quadrature, steps, tolerance); read-only.
        tolerance None is a fixed rule (quadrature, steps); a float asks the converged mode for that
        completeness error per layer (quadrature and steps are then where it starts).
      threshold_t: coarse threshold t (Attr > t * max).
      refine_rule: "fraction", "strict", "dai", "dai_adaptive", or "none" (no refinement: the coarse set).
      share_p: p, the share of a fact's prompts a refined neuron is coarse in (>= p * n for "fraction", > p * n
        for "strict"; ignored by "dai" and "none"; "dai_adaptive" starts from it).
      shared_s: s: a neuron refined for at least max(3, s * N) of the N facts is shared (METHOD §4).
      kn_set: "specific" (refined minus shared), "refined", or "coarse" (no refinement).
      score: "specific" (D over the wrong-fact null) or "R".
    """

    name: str
    attribution: Mapping[str, Any]
    threshold_t: float
    refine_rule: str
    share_p: float
    shared_s: float
    kn_set: str
    score: str

    def __post_init__(self):
        unknown = sorted(set(self.attribution) - set(ATTRIBUTION_KEYS))
        if unknown:
            raise ValueError(f"preset {self.name!r}: unknown attribution settings {unknown}; "
                             f"use {ATTRIBUTION_KEYS}")
        object.__setattr__(self, "attribution", MappingProxyType(dict(self.attribution)))
        for field, allowed in (("refine_rule", REFINE_RULES), ("kn_set", KN_SETS), ("score", SCORES)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"preset {self.name!r}: {field}={getattr(self, field)!r}; choose one of {allowed}")
        if (self.refine_rule == "none") != (self.kn_set == "coarse"):
            raise ValueError(f"preset {self.name!r}: kn_set 'coarse' goes with refine_rule 'none' and only with it")
        for field in ("threshold_t", "share_p", "shared_s"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"preset {self.name!r}: {field}={getattr(self, field)} must lie in [0, 1]")

    def __hash__(self) -> int:  # the attribution mapping is read-only but not hashable itself
        return hash((self.name, tuple(sorted(self.attribution.items(), key=lambda kv: kv[0])),
                     *(getattr(self, f) for f in FIELDS[1:])))

    def values(self) -> dict:
        """Every setting as a plain dict (attribution as a nested dict), the form results record."""
        out = {f: getattr(self, f) for f in FIELDS}
        out["attribution"] = dict(self.attribution)
        return {"preset": self.name, **out}


def _preset(name, attribution, *, t=0.2, rule="fraction", p=0.5, kn_set="refined", score="R"):
    base = dict(site="product", baseline="zero", quadrature="left", steps=20, tolerance=None)
    return Preset(name=name, attribution={**base, **attribution}, threshold_t=t, refine_rule=rule, share_p=p,
                  shared_s=0.1, kn_set=kn_set, score=score)


PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in (
    _preset("converged", dict(quadrature="gauss_legendre", steps=12, tolerance=0.01), kn_set="specific",
            score="specific"),
    _preset("paper", dict(quadrature="left", steps=20)),
    _preset("eleuther", dict(quadrature="linspace", steps=20), t=0.3, rule="strict"),
    _preset("easyedit", dict(site="gate", quadrature="left", steps=1), rule="none", kn_set="coarse"),
    _preset("dkn", dict(site="gate", quadrature="linspace", steps=10), rule="strict", p=0.3),
)})
DEFAULT_PRESET = "converged"


def resolve(name: str, overrides: Mapping[str, Any] | None = None) -> tuple[dict, list[str]]:
    """A preset's values with `overrides` applied, and the names of the settings they changed.

    Args:
      name: a key of PRESETS.
      overrides: top-level settings (threshold_t, refine_rule, share_p, shared_s, kn_set, score) and
        attribution settings, either by their own name ("steps") or nested ({"attribution": {"steps": 50}}).
    Returns:
      (values, overridden): values as `Preset.values()` (validated again), and the sorted names of the settings
      whose value differs from the preset's ("steps" for an attribution setting), so a result says so. An
      override equal to the preset's value changes nothing and is not listed.
    Raises:
      ValueError: an unknown preset or setting (the message lists the known ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    overrides = dict(overrides or {})
    attribution = dict(preset.attribution)
    attribution_overrides = dict(overrides.pop("attribution", None) or {})
    attribution_overrides.update({k: overrides.pop(k) for k in list(overrides) if k in ATTRIBUTION_KEYS})
    unknown = sorted(set(overrides) - set(FIELDS)) + sorted(set(attribution_overrides) - set(ATTRIBUTION_KEYS))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; a preset takes {FIELDS[1:]} and the attribution "
                         f"settings {ATTRIBUTION_KEYS}")
    changed = [k for k, v in attribution_overrides.items() if attribution[k] != v]
    changed += [k for k, v in overrides.items() if getattr(preset, k) != v]
    attribution.update(attribution_overrides)
    top = {f: overrides.get(f, getattr(preset, f)) for f in FIELDS[1:]}
    resolved = Preset(name=preset.name, attribution=attribution, **top)  # validates the combination
    return resolved.values(), sorted(changed)


__all__ = ["Preset", "PRESETS", "DEFAULT_PRESET", "REFINE_RULES", "KN_SETS", "SCORES", "resolve"]
