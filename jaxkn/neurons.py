"""From attributions to knowledge neurons (METHOD.md §4), and an EleutherAI-style API over jaxkn.

- Coarse KNs of one prompt: {(l, i) : Attr(l, i) > t * max over all (l, i)}, default t = 0.2.
- Refined KNs of a fact: coarse in at least p * n of its n paraphrases (default p = 0.5); Dai's rule: at least
  max(0.7 n, 3); Dai's adaptive rule moves p by 0.05 (at most 6 times) until the facts of a relation have 2-5
  refined neurons on average.

A neuron set is a sorted list of (layer, index) tuples with model layer numbers; `to_eleuther` gives
EleutherAI's `[[layer, index], ...]`. An empty refined set is data, not an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from jaxkn.attribution import AttributionConfig, Attributions, attribute

Neuron = tuple[int, int]
REFINE_RULES = ("fraction", "dai")


def coarse_mask(scores, threshold: float = 0.2) -> np.ndarray:
    """Boolean mask of coarse neurons of one prompt's scores [L, F] (or a batch [..., L, F])."""
    scores = np.asarray(scores, np.float64)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"coarse threshold must be in [0, 1], got {threshold}")
    top = scores.max(axis=(-2, -1), keepdims=True)
    # a prompt whose attributions are all <= 0 has no neuron that raises P(answer): no coarse neuron
    return (scores > threshold * top) & (top > 0)


def coarse_neurons(scores, threshold: float = 0.2, layers: Sequence[int] | None = None) -> list[Neuron]:
    """Coarse KNs of one prompt's scores [L, F]; `layers` maps the L axis to model layers (default 0..L-1)."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"coarse_neurons takes one prompt's scores [L, F], got shape {scores.shape}")
    layers = list(range(scores.shape[0])) if layers is None else list(layers)
    rows, cols = np.nonzero(coarse_mask(scores, threshold))
    return sorted((int(layers[r]), int(c)) for r, c in zip(rows, cols))


def batch_coarse_neurons(result: Attributions, threshold: float = 0.2) -> list[list[Neuron]]:
    """Coarse KNs of every prompt of an `Attributions` batch, with model layer numbers."""
    return [coarse_neurons(s, threshold, result.layers) for s in np.asarray(result.scores)]


def refine_count(n_prompts: int, p: float = 0.5, rule: str = "fraction") -> float:
    """How many of n prompts a neuron must be coarse in to be refined."""
    if rule == "fraction":
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"refinement fraction p must be in [0, 1], got {p}")
        return p * n_prompts
    if rule == "dai":
        return max(0.7 * n_prompts, 3)
    raise ValueError(f"unknown refinement rule {rule!r}; choose one of {REFINE_RULES}")


def refined_neurons(coarse_sets: Sequence[Iterable[Neuron]], p: float = 0.5, rule: str = "fraction") -> list[Neuron]:
    """Neurons coarse in at least `refine_count(n, p, rule)` of the n paraphrases' coarse sets."""
    if not coarse_sets:
        raise ValueError("refined_neurons needs the coarse sets of at least one prompt")
    need = refine_count(len(coarse_sets), p, rule)
    counts = Counter(n for s in coarse_sets for n in set(map(tuple, s)))
    return sorted(n for n, c in counts.items() if c >= need)


def adaptive_refine(facts_coarse_sets: Sequence[Sequence[Iterable[Neuron]]], p: float = 0.5, step: float = 0.05,
                    max_moves: int = 6, target: tuple[float, float] = (2.0, 5.0)) -> tuple[float, list[list[Neuron]]]:
    """Dai's adaptive rule for the facts of one relation: move p by `step` (at most `max_moves` times) until
    the mean refined-set size lies in `target`. Returns (p used, refined set per fact)."""
    low, high = target

    def refine_all(q):
        return [refined_neurons(sets, q) for sets in facts_coarse_sets]

    refined = refine_all(p)
    for _ in range(max_moves):
        mean = float(np.mean([len(r) for r in refined]))
        if low <= mean <= high:
            break
        # too many neurons: ask for more agreement; too few: ask for less
        p = round(float(np.clip(p + step if mean > high else p - step, 0.0, 1.0)), 10)  # no drift in p * n
        refined = refine_all(p)
    return p, refined


def to_eleuther(neurons: Iterable[Neuron]) -> list[list[int]]:
    """EleutherAI knowledge-neurons' format: [[layer, index], ...]."""
    return [[int(l), int(i)] for l, i in neurons]


class KnowledgeNeurons:
    """The EleutherAI `KnowledgeNeurons` workflow over a jaxkn model (scores, coarse and refined neurons).

    Args:
      cfg, params: the model.
      tokenizer: a `jaxkn.tokenizer.Tokenizer` (or anything with `encode(text, add_bos=None)` and `bos_id`).
      attribution_config: what to attribute (`AttributionConfig`, default: METHOD.md's defaults).
    """

    def __init__(self, cfg, params, tokenizer, attribution_config: AttributionConfig = AttributionConfig()):  # noqa: B008 (frozen: immutable default)
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        self.attribution_config = attribution_config

    def attribute(self, prompts: Sequence[str], ground_truth: str | Sequence[str]) -> Attributions:
        return attribute(self.params, self.cfg, self.tokenizer, prompts, ground_truth, self.attribution_config)

    def get_scores(self, prompt: str, ground_truth: str) -> np.ndarray:
        """Attribution scores of every attributed neuron, [L, F] (L = the config's layers, default all)."""
        return np.asarray(self.attribute([prompt], ground_truth).scores[0])

    def get_coarse_neurons(self, prompt: str, ground_truth: str, threshold: float = 0.2) -> list[list[int]]:
        """[[layer, index], ...] with score > threshold * max (EleutherAI's `adaptive_threshold`)."""
        result = self.attribute([prompt], ground_truth)
        return to_eleuther(batch_coarse_neurons(result, threshold)[0])

    def get_refined_neurons(self, prompts: Sequence[str], ground_truth: str, p: float = 0.5,
                            coarse_threshold: float = 0.2, rule: str = "fraction") -> list[list[int]]:
        """[[layer, index], ...] coarse in at least p * n of the prompts (all prompts in one padded batch)."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError("get_refined_neurons takes a non-empty list of prompts (paraphrases of one fact)")
        result = self.attribute(list(prompts), ground_truth)
        return to_eleuther(refined_neurons(batch_coarse_neurons(result, coarse_threshold), p, rule))


__all__ = [
    "Neuron", "REFINE_RULES", "coarse_mask", "coarse_neurons", "batch_coarse_neurons", "refine_count",
    "refined_neurons", "adaptive_refine", "to_eleuther", "KnowledgeNeurons",
]
