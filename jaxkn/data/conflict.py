"""Knowledge-conflict prompts (METHOD.md §6.5): a counterfactual statement of one hop before the question.

The counterfactual keeps the relation and changes the object to another of the same type whose chain's answer
is known from the dataset, so "which chain does the answer follow" has an answer: the true one, the
counterfactual one, or neither. Choices are seeded per item and hop, the same in every process.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from jaxkn.data.items import TwoHopItem
from jaxkn.data.prompts import PromptStyle, prompt_parts


def stable_seed(*parts) -> int:
    """A seed from strings and ints, the same in every process (Python's hash() is salted)."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def counterfactual_index(items: Sequence[TwoHopItem]) -> dict[str, dict[str, str]]:
    """relation r2 -> {bridge: answer} over the dataset, for choosing counterfactual hops with a known chain."""
    index: dict[str, dict[str, str]] = {}
    for it in items:
        index.setdefault(it.two_hop_id[1][1], {}).setdefault(it.bridge, it.answer)
    return index


def choose_counterfactual(item: TwoHopItem, hop: int, index: dict, seed: int) -> tuple[str, str] | None:
    """(counterfactual object of `hop`, the answer its chain leads to), seeded; None when no other object.

    Hop 1: another bridge of an item with the same second relation (so its chain's answer is known) whose
    answer differs. Hop 2: another answer of the same second relation.
    """
    chains = index.get(item.two_hop_id[1][1], {})
    true_names = {item.bridge, *item.fact1_ans_alias} if hop == 1 else {item.answer, *item.answer_aliases}
    if hop == 1:
        options = sorted((b, a) for b, a in chains.items() if b not in true_names and a != item.answer)
    else:
        options = sorted({(a, a) for a in chains.values() if a not in true_names})
    if not options:
        return None
    return options[np.random.default_rng([seed, stable_seed(item.case_id, hop)]).integers(len(options))]


def conflict_prompt(item: TwoHopItem, hop: int, counterfactual: str, style: PromptStyle) -> str:
    """The two-hop prompt with a counterfactual statement of `hop` (in the exemplars' Q/A form) just before it."""
    prefix, body = prompt_parts(item.two_hop, style)
    return f"{prefix}Q: {item.hop(hop).queries[0]}\nA: {counterfactual}\n\n{body}"


__all__ = ["stable_seed", "counterfactual_index", "choose_counterfactual", "conflict_prompt"]
