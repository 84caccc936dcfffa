"""Typed results of the two-hop study: a fact's, an item's, and the aggregate, with a schema version.

Each is a frozen dataclass written to and read from JSON (`to_json` / `from_json`). Every file carries
`"schema": SCHEMA_VERSION`; a file of another version is refused with a message instead of being misread (a
results folder written by an older jaxkn must be rerun, not resumed).

Conventions: a score read ("reads") maps a set name ("hop1", "hop1_random", ...) to its statistics ("R", "paper";
CoT reads add "R_mean", "paper_mean"); levels are None where a hop has no knowledge neurons.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from jaxkn.errors import UserInputError

SCHEMA_VERSION = 2

Reads = dict[str, dict[str, float]]


class SchemaError(UserInputError):
    """A result file written by another version of the study (or not a study result at all)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FactResult:
    """One fact's attributions and refined sets (METHOD §3-§4): what does not depend on the other facts.

    Attributes:
      queries: the paraphrased queries attributed; targets: per query, the name the model said (an alias of
        `answer` when it said one: its tokens are attributed); answer, aliases: the gold names.
      triple / label: the fact.
      refined: the refined KN set [[layer, index], ...]; loo_refined: the leave-one-out folds' sets (fold j
        without query j); coarse_sizes: coarse-set size per query.
      prob_first_token: P(first target token) per query.
      completeness_per_layer: the largest IG completeness error per layer over the queries' rows;
      points_per_layer: the most integration points a layer used; flagged: (query row, layer) pairs whose
      completeness error stayed above the tolerance; completeness_error_max: the largest of all.
    """

    queries: list[str]
    targets: list[str]
    answer: str
    aliases: list[str]
    triple: list[str]
    label: list[str]
    refined: list[list[int]]
    loo_refined: list[list[list[int]]]
    coarse_sizes: list[int]
    prob_first_token: list[float]
    completeness_per_layer: list[float]
    points_per_layer: list[int]
    flagged: int
    completeness_error_max: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class FactSets:
    """A fact's KN set for scores and interventions, with its nulls and single-hop levels (METHOD §4-§5).

    Attributes:
      neurons / abar: the set (`StudyConfig.kn_set`: refined minus shared by default) and its neurons' mean
        activation over the fact's queries; shared_in: the shared neurons of the refined set.
      random / abar_random: same count per layer, seeded (the first version's control).
      matched / matched_abar: matched random draws (per KN a neuron of the same layer and |abar| decile).
      wrong: the keys of the wrong-fact null (other studied facts with another answer, same relation first).
      single_R / single_R_per_query: leave-one-out single-hop level of R; single_paper: the paper's mean
        activation; single_random, single_matched: the same for the nulls; single_D / single_D_per_query: the
        specific score's level (R own minus mean R of the wrong-fact sets). None where undefined.
    """

    neurons: list[list[int]]
    abar: list[float]
    shared_in: list[list[int]]
    random: list[list[int]]
    abar_random: list[float]
    matched: list[list[list[int]]]
    matched_abar: list[list[float]]
    wrong: list[str]
    single_R: float | None
    single_R_per_query: list[float | None]
    single_paper: float | None
    single_random: float | None
    single_matched: float | None
    single_D: float | None
    single_D_per_query: list[float | None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnswerRead:
    """The model's answer to one prompt, its judgement, and the KN reads on that prompt.

    Attributes:
      answer_text: the decoded answer; correct: judged against the gold answer (METHOD §6).
      reads: score statistics per set (module docstring).
      says_bridge: (no CoT) the answer names the bridge entity; positions: (CoT) generated positions read.
    """

    answer_text: str
    correct: bool
    reads: Reads
    says_bridge: bool | None = None
    positions: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConditionOutcome:
    """One decoding condition (unscaled, or an intervention): P(first answer token), the answer, its judgement."""

    p_first: float
    answer_text: str
    correct: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConflictOutcome:
    """A counterfactual hop stated before the question: which chain the answer follows, the true fact's reads."""

    counterfactual: str
    counterfactual_answer: str
    answer_text: str
    follows: str  # "true", "counterfactual" or "other"
    reads: Reads


@dataclasses.dataclass(frozen=True, kw_only=True)
class SingleLevels:
    """A hop's single-hop levels and set sizes copied from its fact's sets (so an item file stands alone)."""

    R: float | None
    paper: float | None
    random: float | None
    matched: float | None
    D: float | None
    kn: int
    refined: int
    shared_in: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ItemResult:
    """Every measurement of one two-hop item.

    Attributes:
      case_id, two_hop, bridge, answer, relations: the item; facts: its two facts' keys (items sharing a fact
        are not independent: the analysis resamples by fact cluster).
      sets_key: the hash of the KN sets and nulls it was measured with (shared neurons depend on every studied
        fact: an item measured under other sets is measured again).
      single: single-hop levels and set sizes per hop ("hop1", "hop2").
      cot: per CoT setting ("none", "zero_shot", "few_shot") the answer and the reads.
      interventions: "base" (unscaled) and each condition ("hop1/enhance", "both/random_suppress", ...).
      conflict: per hop ("hop1", "hop2") the knowledge-conflict outcome (absent when no counterfactual exists).
    """

    case_id: int
    two_hop: str
    bridge: str
    answer: str
    relations: list[str]
    facts: list[str]
    sets_key: str
    single: dict[str, SingleLevels]
    cot: dict[str, AnswerRead]
    interventions: dict[str, ConditionOutcome]
    conflict: dict[str, ConflictOutcome]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudySummary:
    """The aggregate (summary.json): every setting, the dataset, the filter, the facts, every number, the verdicts.

    Attributes:
      settings: `StudyConfig.to_dict()`; model_id: the model and its config digest; regenerate: the command.
      dataset: path and item count; filter: screened / kept / studied and counts per relation pair.
      skipped: items the study could not measure, with their case_id and reason.
      facts: fact-level counts (unique facts, empty KN sets).
      attribution: "completeness" ({"max", "median", "flagged_layers", "points_per_layer"}) and
        "completeness_per_layer_max" (IG completeness error per layer, largest over facts).
      neurons: "shared" ([{"neuron": [layer, index], "facts": n}, ...]), "shared_rule", "kn_counts_per_layer".
      controls: the nulls measured ("wrong_fact", "matched_random", "random", "shared").
      conventions: what the scores, the conflict statement and the interventions mean.
      timings_s: stage wall times summed over every session on the folder.
      peak_rss_gib: the last session's peak resident memory (GiB), read as each of its stages ended.
      numbers: every number of `experiments.analysis.analyse`; verdicts: one per claim (each naming its null and
        score); figures: PNG paths.
    """

    settings: dict[str, Any]
    model_id: str
    regenerate: str
    dataset: dict[str, Any]
    filter: dict[str, Any]
    facts: dict[str, Any]
    conventions: dict[str, str]
    timings_s: dict[str, float]
    numbers: dict[str, Any]
    attribution: dict[str, Any] = dataclasses.field(default_factory=dict)
    neurons: dict[str, Any] = dataclasses.field(default_factory=dict)
    controls: list[str] = dataclasses.field(default_factory=list)
    verdicts: dict[str, Any] = dataclasses.field(default_factory=dict)
    figures: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, Any] = dataclasses.field(default_factory=dict)
    peak_rss_gib: dict[str, float] = dataclasses.field(default_factory=dict)


# ---- JSON ------------------------------------------------------------------------------------------------

def to_plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: an undefined number is null
    return value


def to_json(result) -> dict:
    """A result as a JSON-ready dict with the schema version."""
    return {"schema": SCHEMA_VERSION, "kind": type(result).__name__, **to_plain(result)}


def _build(tp, value):
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise SchemaError(f"unknown fields {unknown} for {tp.__name__}")
        return tp(**{k: _build(hints[k], v) for k, v in value.items()})
    if origin is dict:
        return {k: _build(args[1], v) for k, v in value.items()}
    if origin is list:
        return [_build(args[0], v) for v in value]
    return value


def from_plain(tp, value):
    """A value of type `tp` (a result dataclass, or a dict/list of them) from its plain JSON form."""
    return _build(tp, value)


def from_json(cls, data: dict, source: str = "result"):
    """The `cls` result from `to_json`'s dict; refuses another schema version or kind, naming the file."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION or data.get("kind") != cls.__name__:
        found = data.get("schema") if isinstance(data, dict) else None
        raise SchemaError(f"{source} is not a {cls.__name__} of schema {SCHEMA_VERSION} (found schema {found!r}): "
                          f"it was written by another version of jaxkn; rerun into a new --out instead of resuming")
    body = {k: v for k, v in data.items() if k not in ("schema", "kind")}
    try:
        return _build(cls, body)
    except (TypeError, SchemaError) as err:
        raise SchemaError(f"{source}: {err}") from None
