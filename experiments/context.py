"""The study's context: what every stage needs (model, settings, prompt styles, the dataset's answer lists)."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxkn.data import TwoHopItem, is_correct
from jaxkn.data.prompts import COT_STYLES
from jaxkn.experiments.settings import StudyConfig


@dataclasses.dataclass(frozen=True)
class StudyContext:
    """The model, the settings, and the dataset-wide answer lists, for every stage of one run.

    Attributes:
      cfg, params, tokenizer: the model.
      settings: the run's `StudyConfig`.
      competitors: relation id -> every answer of that relation in the dataset (the judge rejects a match
        inside a longer competing answer, METHOD §6).
      stop_ids: tokens that end a direct answer (EOS, newline).
      styles: CoT setting -> `PromptStyle`.
      mesh: a `jaxkn.sharding` mesh: attribution rows split over "data" (params already placed), or None.
    """

    cfg: Any
    params: Any
    tokenizer: Any
    settings: StudyConfig
    competitors: dict
    stop_ids: tuple[int, ...]
    styles: dict
    mesh: Any = None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(t) for t in ids if t >= 0], skip_special_tokens=True)

    def judge(self, item: TwoHopItem, text: str, cot: bool) -> bool:
        """Is `text` the item's two-hop answer (aliases accepted, competitors of its relation rejected)?"""
        return is_correct(text, item.answer, item.answer_aliases,
                          competitors=self.competitors.get(item.two_hop_id[1][1], ()), cot=cot)


def make_context(cfg, params, tokenizer, settings: StudyConfig, competitors: dict, mesh=None) -> StudyContext:
    newline = tokenizer.encode("\n")
    stops = tuple(t for t in [tokenizer.eos_id] + (newline if len(newline) == 1 else []) if t is not None)
    return StudyContext(cfg, params, tokenizer, settings, competitors, stops, dict(COT_STYLES), mesh)
