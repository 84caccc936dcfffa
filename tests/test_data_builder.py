"""The built-in dataset: size, relation pairs, determinism, bridge consistency, real facts, exemplar disjointness."""

from __future__ import annotations

import importlib.metadata as md
from collections import Counter

import pytest

from jaxkn.data import (
    BUILTIN_PATH,
    EXEMPLAR_FACTS,
    RELATION_PAIRS,
    RELATIONS,
    build_items,
    builtin_items,
    builtin_metadata,
    load_items,
    parse_pair,
)
from jaxkn.data.__main__ import main
from jaxkn.data.sources import fold, load_world


@pytest.fixture(scope="module")
def items():
    return build_items()


def _pair(item):
    return item.two_hop_id[0][1], item.two_hop_id[1][1]


def test_size_and_pairs(items):
    counts = Counter(_pair(it) for it in items)
    assert len(items) >= 1000
    assert len([p for p, n in counts.items() if n >= 20]) >= 5
    assert set(counts) == set(RELATION_PAIRS)
    assert [it.case_id for it in items] == list(range(len(items)))
    for relation in RELATIONS.values():
        assert len(relation.queries) >= 4 and all("{s}" in q for q in relation.queries)
    for item in items:
        assert len(item.fact1_query) >= 4 and len(item.fact2_query) >= 4 and "{" not in item.two_hop


def test_deterministic_for_a_seed(items):
    assert build_items() == items
    other = build_items(seed=1)
    assert [it.two_hop_id for it in other] == [it.two_hop_id for it in items]  # same facts
    assert any(a.two_hop != b.two_hop for a, b in zip(items, other))  # different main phrasing
    subset = build_items(seed=3, n_items=200)
    assert subset == build_items(seed=3, n_items=200) and len(subset) == 200
    by_id = {it.case_id: it.two_hop_id for it in items}
    assert all(by_id[it.case_id] == it.two_hop_id for it in subset)  # case ids are those of the full build


def test_bridge_is_answer_of_hop1_and_subject_of_hop2(items):
    for it in items:
        (s, r1, o1), (s2, r2, o2) = it.two_hop_id
        (ls, _, lo1), (ls2, _, lo2) = it.two_hop_label
        assert o1 == s2 and lo1 == ls2 == it.fact1_ans and lo2 == it.fact2_ans
        assert o2 != s, "a chain must not return to its start"
        assert all(ls in q for q in it.fact1_query) and all(lo1 in q for q in it.fact2_query)


def _fact(items, relation, subject):
    hits = {it.hop(h).answer for it in items for h in (1, 2)
            if it.hop(h).relation == relation and it.hop(h).triple_label[0] == subject}
    assert len(hits) == 1, (relation, subject, hits)
    return hits.pop()


def test_real_facts(items):
    assert _fact(items, "capital", "Japan") == "Tokyo"
    assert _fact(items, "capital", "France") == "Paris"
    assert _fact(items, "capital", "Kazakhstan") == "Astana"
    assert _fact(items, "continent", "Japan") == "Asia"
    assert _fact(items, "continent", "Argentina") == "South America"
    assert _fact(items, "language", "Germany") == "German"
    assert _fact(items, "currency", "Japan") == "Yen"
    assert _fact(items, "city_country", "Osaka") == "Japan"
    assert _fact(items, "city_country", "Sydney") == "Australia"
    assert _fact(items, "capital_of", "Tokyo") == "Japan"
    assert _fact(items, "sole_neighbour", "Lesotho") == "South Africa"
    us = next(it for it in items if it.fact1_ans == "United States")
    assert {"USA", "America"} <= set(us.fact1_ans_alias) and "US" not in us.fact1_ans_alias
    yen = next(it for it in items if it.fact2_ans == "Yen")
    assert "JPY" in yen.fact2_ans_alias
    assert "the United Kingdom" in next(it for it in items if it.fact2_query[0].endswith("United Kingdom?")).fact2_query[0]


def test_exemplar_facts_are_true_and_absent(items):
    world = load_world()
    for relation, subject, answer in EXEMPLAR_FACTS:
        facts = [f for f in world.facts[relation].values() if fold(f.subject.name) == fold(subject)]
        assert len(facts) == 1 and fold(facts[0].object.name) == fold(answer), (relation, subject)
    excluded = {(r, fold(s)) for r, s, _ in EXEMPLAR_FACTS}
    for it in items:
        for h in (1, 2):
            hop = it.hop(h)
            assert (hop.relation, fold(hop.triple_label[0])) not in excluded


def test_builtin_matches_a_fresh_build(items):
    meta = builtin_metadata()
    assert "CC BY 4.0" in meta["attribution"] and "GeoNames" in meta["attribution"]
    assert BUILTIN_PATH.stat().st_size < 1_000_000
    built_with = {p: s["version"] for p, s in meta["sources"].items()}
    if built_with != {p: md.version(p) for p in built_with}:
        pytest.skip(f"installed data packages differ from the committed build's {built_with}")
    assert builtin_items() == items


def test_cli_build_and_stats(tmp_path, capsys):
    out = tmp_path / "small.json"
    main(["build", "--out", str(out), "--n-items", "30", "--relations", "city_country->capital",
          "capital_of->continent", "--plain"])
    items = load_items(out)
    assert len(items) == 30 and {_pair(it) for it in items} <= {("city_country", "capital"),
                                                                  ("capital_of", "continent")}
    assert "CC BY 4.0" in (tmp_path / "small.json.meta.json").read_text()
    main(["stats", str(out)])
    assert "30 items" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown relation pair 'capital->capital'; choose from"):
        parse_pair("capital->capital")
