"""From attributions to knowledge neurons (METHOD.md §4), as pure numpy functions.

- Coarse KNs of one prompt: {(l, i) : Attr(l, i) > t * max over all (l, i)}, default t = 0.2 (EleutherAI's
  `adaptive_threshold`); EleutherAI's absolute `threshold` and `percentile` options are `threshold_mask` and
  `percentile_mask`.
- Refined KNs of a fact, by a named rule over its n paraphrases' coarse masks (`REFINE_RULES`):
  `fraction` coarse in >= p * n prompts (the study's default, p = 0.5); `strict` coarse in > p * n prompts
  (EleutherAI's `get_refined_neurons`, AMIG and DKN code: n = 4, p = 0.5 needs 3 of 4); `dai` coarse in
  >= max(0.7 n, 3) prompts; `dai_adaptive` moves p by 0.05 (at most 6 times) until the facts of a relation have
  2-5 refined neurons on average, so it needs every fact of the relation (`adaptive_refine_masks`).
- Shared neurons (METHOD §4, revision 2026-12-01): neurons refined for many facts with different answers
  encode the answer format, not a fact; `fact_specific` = refined minus shared.
- EleutherAI's `negative_examples`: `drop_negative` removes neurons coarse on prompts of other facts.

The count threshold p * n is compared with a tolerance of `COUNT_TOLERANCE` (1e-9): a p * n within 1e-9 of an
integer k counts as exactly k, so a decimal p means what it says (0.7 * 10 is 7.000000000000001 in floating
point; with the tolerance `fraction` needs 7 of 10, not 8). For integer counts this is exactly the study's
earlier `counts >= p * n - 1e-9`, and it equals a plain `counts >= p * n` whenever p * n is exact (p = 0.5,
0.25, 0.75 with any n), which is every run committed so far.

A neuron set is a sorted list of (layer, index) tuples with model layer numbers; a mask is bool [L, F] (or
[n, L, F] for n prompts), with the axis letters of `jaxkn.model`. `to_eleuther` gives EleutherAI's
`[[layer, index], ...]`. An empty refined set is data, not an error. The EleutherAI-style class over these
functions is `jaxkn.knowledge_neurons.KnowledgeNeurons`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import Bool

from jaxkn.attribution import Attributions

Neuron = tuple[int, int]
REFINE_RULES = ("fraction", "strict", "dai", "dai_adaptive")
COUNT_TOLERANCE = 1e-9


# ---- coarse neurons of one prompt ---------------------------------------------------------------------

def coarse_mask(scores, threshold: float = 0.2) -> np.ndarray:
    """Boolean mask of coarse neurons of one prompt's scores [L, F] (or a batch [..., L, F]): score > t * max."""
    scores = np.asarray(scores, np.float64)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"coarse threshold must be in [0, 1], got {threshold}")
    top = scores.max(axis=(-2, -1), keepdims=True)
    # a prompt whose attributions are all <= 0 has no neuron that raises P(answer): no coarse neuron
    return (scores > threshold * top) & (top > 0)


def threshold_mask(scores, threshold: float) -> np.ndarray:
    """Coarse neurons by an absolute threshold: score > threshold (EleutherAI's `threshold`), [..., L, F]."""
    return np.asarray(scores, np.float64) > threshold


def percentile_mask(scores, percentile: float) -> np.ndarray:
    """Coarse neurons by percentile: score > the `percentile`-th percentile of the prompt's own [L, F] scores
    (EleutherAI's `percentile`; numpy's default linear interpolation), [..., L, F]."""
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    scores = np.asarray(scores, np.float64)
    cut = np.percentile(scores.reshape(*scores.shape[:-2], -1), percentile, axis=-1)
    return scores > np.asarray(cut)[..., None, None]


def mask_neurons(mask, layers: Sequence[int] | None = None) -> list[Neuron]:
    """The (layer, index) pairs of a mask [L, F], sorted; `layers` maps the L axis to model layers."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"a neuron mask is [L, F], got shape {mask.shape}")
    layers = list(range(mask.shape[0])) if layers is None else list(layers)
    rows, cols = np.nonzero(mask)
    return sorted((int(layers[r]), int(c)) for r, c in zip(rows, cols))


def coarse_neurons(scores, threshold: float = 0.2, layers: Sequence[int] | None = None) -> list[Neuron]:
    """Coarse KNs of one prompt's scores [L, F]; `layers` maps the L axis to model layers (default 0..L-1)."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"coarse_neurons takes one prompt's scores [L, F], got shape {scores.shape}")
    return mask_neurons(coarse_mask(scores, threshold), layers)


def batch_coarse_neurons(result: Attributions, threshold: float = 0.2) -> list[list[Neuron]]:
    """Coarse KNs of every prompt of an `Attributions` batch, with model layer numbers."""
    return [coarse_neurons(s, threshold, result.layers) for s in np.asarray(result.scores)]


# ---- refined neurons of one fact ----------------------------------------------------------------------

def _snap(count: float) -> float:
    # p * n within COUNT_TOLERANCE of an integer is that integer (module docstring)
    nearest = round(count)
    return float(nearest) if abs(count - nearest) <= COUNT_TOLERANCE else count


def refine_count(n_prompts: int, p: float = 0.5, rule: str = "fraction") -> float:
    """The count a neuron's number of coarse prompts is compared with: refined when count >= it (`fraction`,
    `dai`) or count > it (`strict`). Raises ValueError for n_prompts < 1 or an unknown rule."""
    if n_prompts < 1:
        raise ValueError(f"refining needs the coarse sets of at least one prompt, got {n_prompts}; a hop needs at "
                         f"least 2 queries for leave-one-out folds")
    if rule in ("fraction", "strict"):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"refinement fraction p must be in [0, 1], got {p}")
        return _snap(p * n_prompts)
    if rule == "dai":
        return max(_snap(0.7 * n_prompts), 3.0)
    if rule == "dai_adaptive":
        raise ValueError("rule 'dai_adaptive' chooses p from all facts of a relation: call "
                         "adaptive_refine_masks({fact: coarse masks}), then refine with rule 'fraction' at its p")
    raise ValueError(f"unknown refinement rule {rule!r}; choose one of {REFINE_RULES}")


def _passes(counts, need: float, rule: str):
    return counts > need if rule == "strict" else counts >= need


def _coarse_stack(coarse) -> Bool[np.ndarray, "n L F"]:
    coarse = np.asarray(coarse, bool)
    if coarse.ndim != 3:
        raise ValueError(f"coarse masks are [n, L, F] (n prompts), got shape {coarse.shape}")
    if coarse.shape[0] == 0:
        raise ValueError("no coarse masks: refining needs at least one prompt (a hop needs at least 2 queries: "
                         "one fold of leave-one-out refines on the other n - 1)")
    return coarse


def refine_mask(coarse, rule: str = "fraction", p: float = 0.5) -> Bool[np.ndarray, "L F"]:
    """Refined KNs of one fact from its n prompts' coarse masks [n, L, F], by `rule` (module docstring)."""
    coarse = _coarse_stack(coarse)
    need = refine_count(coarse.shape[0], p, rule)
    return _passes(coarse.sum(axis=0), need, rule)


def leave_one_out_masks(coarse, rule: str = "fraction", p: float = 0.5) -> Bool[np.ndarray, "n L F"]:
    """Fold j: the refined mask from every prompt but j, by the same rule on n - 1 prompts, [n, L, F]."""
    coarse = _coarse_stack(coarse)
    n = coarse.shape[0]
    if n < 2:
        raise ValueError(f"leave-one-out needs at least 2 prompts, got {n}: a hop needs at least 2 queries "
                         f"(fold j refines on the other n - 1)")
    need = refine_count(n - 1, p, rule)
    others = coarse.sum(axis=0, dtype=np.int64)[None] - coarse  # [n, L, F] counts without prompt j
    return _passes(others, need, rule)


def refined_neurons(coarse_sets: Sequence[Iterable[Neuron]], p: float = 0.5, rule: str = "fraction") -> list[Neuron]:
    """List form of `refine_mask`: neurons whose count among the n paraphrases' coarse sets passes `rule`."""
    if not coarse_sets:
        raise ValueError("refined_neurons needs the coarse sets of at least one prompt (a hop needs at least 2 "
                         "queries: one fold of leave-one-out refines on the other n - 1)")
    need = refine_count(len(coarse_sets), p, rule)
    counts = Counter(n for s in coarse_sets for n in {(int(a), int(b)) for a, b in s})
    return sorted(n for n, c in counts.items() if _passes(c, need, rule))


def _adaptive_search(refine_all, sizes, p: float, step: float, max_moves: int, target: tuple[float, float]):
    low, high = target
    refined = refine_all(p)
    for _ in range(max_moves):
        mean = float(np.mean(sizes(refined)))
        if low <= mean <= high:
            break
        # too many neurons: ask for more agreement; too few: ask for less
        p = round(float(np.clip(p + step if mean > high else p - step, 0.0, 1.0)), 10)  # no drift in p * n
        refined = refine_all(p)
    return p, refined


def adaptive_refine(facts_coarse_sets: Sequence[Sequence[Iterable[Neuron]]], p: float = 0.5, step: float = 0.05,
                    max_moves: int = 6, target: tuple[float, float] = (2.0, 5.0)) -> tuple[float, list[list[Neuron]]]:
    """Dai's adaptive rule for the facts of one relation (list form): move p by `step` (at most `max_moves`
    times) until the mean refined-set size lies in `target`. Returns (p used, refined set per fact)."""
    return _adaptive_search(lambda q: [refined_neurons(sets, q) for sets in facts_coarse_sets],
                            lambda refined: [len(r) for r in refined], p, step, max_moves, target)


def adaptive_refine_masks(coarse_by_fact: Mapping[Hashable, np.ndarray], p: float = 0.5, step: float = 0.05,
                          max_moves: int = 6, target: tuple[float, float] = (2.0, 5.0),
                          ) -> tuple[float, dict[Hashable, np.ndarray]]:
    """`dai_adaptive` in array form over every fact of one relation: {fact: coarse [n, L, F]} ->
    (p used, {fact: refined [L, F]}), each fact refined by `fraction` at the shared p. Leave-one-out folds of
    such a fact use `leave_one_out_masks(coarse, "fraction", p_used)`."""
    if not coarse_by_fact:
        raise ValueError("dai_adaptive needs the coarse masks of at least one fact of the relation")
    stacks = {key: _coarse_stack(c) for key, c in coarse_by_fact.items()}
    return _adaptive_search(lambda q: {key: refine_mask(c, "fraction", q) for key, c in stacks.items()},
                            lambda refined: [int(m.sum()) for m in refined.values()], p, step, max_moves, target)


# ---- across facts: shared neurons, fact-specific sets, negative examples ------------------------------

class SharedNeuron(NamedTuple):
    """A neuron refined for many facts: `facts` counts the facts it is refined for, by distinct answer when
    `shared_neurons(distinct_answers=True)` (the default)."""

    neuron: Neuron
    facts: int


def answer_key(answer: str) -> str:
    """Answers are the same when equal after stripping surrounding whitespace and casefolding."""
    return answer.strip().casefold()


def shared_neurons(refined_by_fact: Mapping[Hashable, Iterable[Neuron]], answers: Mapping[Hashable, str],
                   share: float = 0.1, min_facts: int = 3, *, distinct_answers: bool = True) -> list[SharedNeuron]:
    """Neurons refined for at least max(min_facts, share * N) of the N studied facts (METHOD §4 revision).

    Counting: a neuron's count is the number of distinct `answer_key(answer)` among the facts it is refined
    for, so facts with the same answer count once (a neuron shared by "capital of France" and "largest city of
    France" may be about Paris, not the format). N is the number of facts in `refined_by_fact` (facts with an
    empty refined set included). `distinct_answers=False` counts facts instead.

    Returns the shared neurons, most facts first, then by (layer, index).
    """
    missing = [key for key in refined_by_fact if key not in answers]
    if missing:
        raise ValueError(f"no answer for facts {missing[:5]}: shared_neurons counts facts by distinct answer, "
                         f"pass answers={{fact: answer}} for every fact of refined_by_fact")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    holders: dict[Neuron, set] = defaultdict(set)
    for key, neurons in refined_by_fact.items():
        tag = answer_key(answers[key]) if distinct_answers else key
        for layer, index in neurons:
            holders[(int(layer), int(index))].add(tag)
    need = max(float(min_facts), _snap(share * len(refined_by_fact)))
    shared = [SharedNeuron(n, len(tags)) for n, tags in holders.items() if len(tags) >= need]
    return sorted(shared, key=lambda s: (-s.facts, s.neuron))


def fact_specific(refined: Iterable[Neuron], shared: Iterable[SharedNeuron | Neuron]) -> list[Neuron]:
    """Refined minus shared, sorted; may be empty (data, not an error)."""
    drop = {tuple(s.neuron) if isinstance(s, SharedNeuron) else (int(s[0]), int(s[1])) for s in shared}
    return sorted({(int(a), int(b)) for a, b in refined} - drop)


def drop_negative(refined: Iterable[Neuron], negative_coarse_sets: Iterable[Iterable[Neuron]]) -> list[Neuron]:
    """EleutherAI's `negative_examples`: drop every refined neuron coarse on any negative prompt, sorted.

    (EleutherAI's own loop compares each negative prompt's whole list with single neurons, so it never drops
    anything; this is what its docstring says it does.)"""
    negative = {(int(a), int(b)) for s in negative_coarse_sets for a, b in s}
    return sorted({(int(a), int(b)) for a, b in refined} - negative)


def to_eleuther(neurons: Iterable[Neuron]) -> list[list[int]]:
    """EleutherAI knowledge-neurons' format: [[layer, index], ...]."""
    return [[int(l), int(i)] for l, i in neurons]


__all__ = [
    "Neuron", "REFINE_RULES", "COUNT_TOLERANCE", "coarse_mask", "threshold_mask", "percentile_mask",
    "mask_neurons", "coarse_neurons", "batch_coarse_neurons", "refine_count", "refine_mask",
    "leave_one_out_masks", "refined_neurons", "adaptive_refine", "adaptive_refine_masks", "SharedNeuron",
    "answer_key", "shared_neurons", "fact_specific", "drop_negative", "to_eleuther",
]
