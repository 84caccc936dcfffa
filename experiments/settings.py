"""The two-hop study's settings: one frozen value, checked when built, recorded in every result file.

`StudyConfig` is separate from the model's `ModelConfig` and nests the library's `AttributionConfig`. Every field
is documented once, in the class docstring's `Attributes:` section; the command line (`experiments.cli`) is
derived from the fields and those docs, so adding a setting is one field and one doc line.

Each field has a *scope*, which says what its value changes:
- "fact": a fact's knowledge neurons (the fact cache key, `attribution_key`);
- "item": a per-item result (with the fact scope: the run's `fingerprint`, checked on `--resume`);
- "aggregate": only the aggregate (tau, the bootstrap), recomputed from the item files each time;
- "run": how the run goes, not what it computes (how many items, the mesh).
Raising `--limit` and resuming adds items; changing `tau` needs no recomputation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing

from jaxkn.attribution import AttributionConfig
from jaxkn.data.prompts import COT_MODES
from jaxkn.generate import MODES as DECODE_MODES
from jaxkn.neurons import REFINE_RULES
from jaxkn.presets import KN_SETS, PRESETS
from jaxkn.presets import SCORES as SCORE_KINDS
from jaxkn.recall import SUMMARIES
from jaxkn.sharding import RULES as SHARDING_RULES

COT_SETTINGS = COT_MODES
SCOPES = ("fact", "item", "aggregate", "run")


def setting(default, scope: str, *, choices: tuple | None = None, flag: str | None = None,
            aliases: tuple[str, ...] = ()):
    """A `StudyConfig` field: its default, scope (module docstring), allowed values and command-line names."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    meta = dict(scope=scope, choices=choices, flag=flag, aliases=aliases)
    if isinstance(default, AttributionConfig):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# The converged preset (METHOD §10): every layer's completeness error within 0.01, points spent where needed.
DEFAULT_ATTRIBUTION = AttributionConfig(**{k: v for k, v in PRESETS["converged"].attribution.items()})


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """Every setting of one run of the study.

    Attributes:
      model: jaxkn checkpoint folder, HF model folder (config.json + safetensors) or .gguf file (default: the embedded SmolLM2-135M-Instruct).
      dtype: params dtype of the model (default: the checkpoint's own; the embedded SmolLM2: float32).
      dataset: TFRKN.json, a jaxkn-built file or an MQuAKE file (default: the built-in dataset).
      limit: items to study, counted after the filter (METHOD §6).
      screen: screen at most SCREEN x LIMIT candidates (a model that knows little would otherwise screen the whole dataset).
      cot: comma-separated CoT settings to run (none, zero_shot, few_shot); none always runs.
      seed: seeds candidate order, random controls, counterfactual choices and the bootstrap.
      preset: the named bundle of settings the run started from (METHOD §10); settings given beside it override it.
      preset_overrides: the settings given beside the preset whose value differs from the preset's (recorded).
      attribution: integrated-gradients settings (the library's AttributionConfig; its fields are flags of their own).
      threshold_t: coarse KNs: Attr > t * max over the prompt (METHOD §4).
      share_p: refined KNs: coarse in at least p * n of the hop's n paraphrases (METHOD §4).
      refine_rule: how coarse sets are refined (METHOD §4; "none": a neuron coarse in any query).
      shared_s: a neuron refined for at least max(shared_min_facts, s * N) of the N studied facts is shared (METHOD §4).
      shared_min_facts: the fewest facts that make a neuron shared.
      kn_set: the set every score and intervention uses: specific (refined minus shared), refined, or coarse.
      score: the headline score: specific (D, against the wrong-fact null) or R (METHOD §5); both are reported.
      matched_draws: matched random null draws for scores (same layer, same |abar| decile per KN).
      null_interventions: draws of each null (matched random, wrong-fact sets) decoded as interventions.
      queries_per_hop: paraphrased queries per hop used to find its neurons (the first n of the item's list; at least 2).
      mquake_cloze: for MQuAKE items (one question per hop), add the hop's cloze statement as a second query.
      tau: recalled := two-hop level >= tau * single-hop level (METHOD §5).
      cot_summary: how a CoT read is summarised over generated positions for the headline numbers.
      answer_tokens: new tokens generated for a direct answer (no CoT, single hops, interventions, conflict).
      cot_tokens: new tokens generated for a chain-of-thought answer.
      decode_mode: where an intervention applies while decoding (METHOD §6.3).
      enhance: the enhancing factor.
      suppress: the suppressing factor.
      batch_size: prompts per generation / capture batch.
      bootstrap: bootstrap resamples for every interval.
      seed_bootstrap: seed offset of the bootstrap.
      mesh: DATAxMODEL device mesh, e.g. 4x2: prompts split over DATA, params over MODEL (default: one device).
      sharding: how params sit on the mesh's MODEL axis (fsdp fits any model; tensor needs heads, d_ff and vocabulary divisible by MODEL).
    """

    model: str | None = setting(None, "run")  # identified by its model id in the fingerprint
    dtype: str | None = setting(None, "run", choices=("float32", "bfloat16"))  # part of the model id
    dataset: str | None = setting(None, "run")  # identified by the content of the records used
    limit: int = setting(64, "run")
    screen: int = setting(25, "run")
    cot: tuple[str, ...] = setting(COT_SETTINGS, "item", choices=COT_SETTINGS)
    seed: int = setting(0, "fact")
    preset: str = setting("converged", "run", choices=tuple(PRESETS))
    preset_overrides: tuple[str, ...] = setting((), "run")
    attribution: AttributionConfig = setting(DEFAULT_ATTRIBUTION, "fact")
    threshold_t: float = setting(0.2, "fact", aliases=("--t",))
    share_p: float = setting(0.5, "fact", aliases=("--p",))
    refine_rule: str = setting("fraction", "fact", choices=tuple(r for r in REFINE_RULES if r != "dai_adaptive")
                               + ("none",))
    shared_s: float = setting(0.1, "item")
    shared_min_facts: int = setting(3, "item")
    kn_set: str = setting("specific", "item", choices=KN_SETS)
    score: str = setting("specific", "aggregate", choices=SCORE_KINDS)
    matched_draws: int = setting(100, "item")
    null_interventions: int = setting(3, "item")
    queries_per_hop: int = setting(4, "fact")
    mquake_cloze: bool = setting(False, "fact")
    tau: float = setting(0.5, "aggregate")
    cot_summary: str = setting("max", "aggregate", choices=SUMMARIES)
    answer_tokens: int = setting(8, "item")
    cot_tokens: int = setting(48, "item")
    decode_mode: str = setting("last", "item", choices=DECODE_MODES)
    enhance: float = setting(2.0, "item")
    suppress: float = setting(0.0, "item")
    batch_size: int = setting(8, "item")
    bootstrap: int = setting(1000, "aggregate")
    seed_bootstrap: int = setting(0, "aggregate")
    mesh: str | None = setting(None, "run")
    sharding: str = setting("fsdp", "run", choices=SHARDING_RULES)

    def __post_init__(self):
        if not isinstance(self.attribution, AttributionConfig):
            raise ValueError(f"attribution must be an AttributionConfig, got {type(self.attribution).__name__}")
        cot = tuple(dict.fromkeys(("none",) + tuple(self.cot)))  # "none" first and always present
        object.__setattr__(self, "cot", cot)
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            bad = [v for v in values if choices and v is not None and v not in choices]
            if bad:
                raise ValueError(f"{_flag(f)}: {', '.join(map(repr, bad))} is not one of {', '.join(choices)}")
        checks = (
            (self.limit >= 1, "--limit", f"must be >= 1, got {self.limit}"),
            (self.screen >= 1, "--screen", f"must be >= 1, got {self.screen}"),
            (0 < self.threshold_t <= 1, "--threshold-t", f"must be in (0, 1], got {self.threshold_t}"),
            (0 < self.share_p <= 1, "--share-p", f"must be in (0, 1], got {self.share_p}"),
            (self.tau > 0, "--tau", f"must be positive, got {self.tau}"),
            (self.queries_per_hop >= 2, "--queries-per-hop", "must be >= 2 (the single-hop level is read out of "
                                                             f"sample, leaving one query out), got {self.queries_per_hop}"),
            (self.answer_tokens >= 1, "--answer-tokens", f"must be >= 1, got {self.answer_tokens}"),
            (self.cot_tokens >= 1, "--cot-tokens", f"must be >= 1, got {self.cot_tokens}"),
            (self.batch_size >= 1, "--batch-size", f"must be >= 1, got {self.batch_size}"),
            (self.bootstrap >= 10, "--bootstrap", f"needs >= 10 resamples, got {self.bootstrap}"),
            (all(map(_finite, (self.enhance, self.suppress))), "--enhance/--suppress", "factors must be finite"),
            (self.attribution.layers is None, "--layers", "the study attributes every layer (METHOD §3)"),
            (0 <= self.shared_s <= 1, "--shared-s", f"must be in [0, 1], got {self.shared_s}"),
            (self.shared_min_facts >= 1, "--shared-min-facts", f"must be >= 1, got {self.shared_min_facts}"),
            (self.matched_draws >= 1, "--matched-draws", f"must be >= 1, got {self.matched_draws}"),
            (self.null_interventions >= 1, "--null-interventions", f"must be >= 1, got {self.null_interventions}"),
            ((self.refine_rule == "none") == (self.kn_set == "coarse"), "--kn-set",
             "coarse goes with --refine-rule none, and only with it"),
        )
        for ok, flag, message in checks:
            if not ok:
                raise ValueError(f"{flag} {message}")
        if self.mesh is not None:
            from jaxkn.sharding import parse_mesh

            parse_mesh(self.mesh)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, AttributionConfig) else (
                list(value) if isinstance(value, tuple) else value)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> StudyConfig:
        """The inverse of `to_dict` (a summary.json's "settings"); unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"preset"})
        if unknown:
            raise ValueError(f"unknown study settings {unknown}; known: {sorted(names)}")
        kw = {k: v for k, v in values.items() if k in names}
        if isinstance(kw.get("attribution"), dict):
            kw["attribution"] = attribution_from_dict(kw["attribution"])
        if isinstance(kw.get("cot"), list):
            kw["cot"] = tuple(kw["cot"])
        return cls(**kw)

    def scoped(self, *scopes: str) -> dict:
        return {f.name: v for f in dataclasses.fields(self) if f.metadata["scope"] in scopes
                for v in [self.to_dict()[f.name]]}

    def fingerprint(self, model_id: str, dataset_id: str = "") -> str:
        """A short hash of the model, the dataset's content and every setting that changes a per-item result."""
        text = json.dumps({"model": model_id, "dataset": dataset_id, **self.scoped("fact", "item")}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def attribution_key(self, model_id: str) -> str:
        """A hash of what a fact's knowledge neurons depend on (the fact cache key; METHOD §4)."""
        text = json.dumps({"model": model_id, **self.scoped("fact")}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: dict) -> list[str]:
        """The settings (with the fact/item scope) whose values differ from a recorded `to_dict()`."""
        mine = self.scoped("fact", "item")
        return sorted(k for k in mine if mine[k] != other.get(k))


def attribution_from_dict(values: dict) -> AttributionConfig:
    names = {f.name for f in dataclasses.fields(AttributionConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown attribution settings {unknown}; known: {sorted(names)}")
    kw = dict(values)
    if isinstance(kw.get("layers"), list):
        kw["layers"] = tuple(kw["layers"])
    return AttributionConfig(**kw)


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def field_docs(cls) -> dict[str, str]:
    """field -> its line in the class docstring's `Attributes:` section (the one place a setting is described)."""
    doc = (cls.__doc__ or "").split("Attributes:", 1)[-1]
    out, current = {}, None
    for line in doc.splitlines():
        stripped = line.strip()
        head, sep, rest = stripped.partition(":")
        if sep and head.replace("_", "").replace(" / ", "").isidentifier() and line.startswith("      ") \
                and not line.startswith("        "):
            for name in head.split(" / "):
                out[name.strip()] = rest.strip()
            current = [n.strip() for n in head.split(" / ")]
        elif current and stripped:
            for name in current:
                out[name] += " " + stripped
    return out


def type_of(cls, name: str):
    """The runtime type of a dataclass field (annotations are strings under `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)[name]
