"""TFRKN and MQuAKE loading: the README example, malformed records, MQuAKE 2-hop cases with aliases."""

from __future__ import annotations

import copy
import json

import pytest

from jaxkn.data import (
    ItemFormatError,
    TwoHopItem,
    load_items,
    load_metadata,
    load_mquake,
    load_tfrkn,
    relation_answers,
    save_items,
)

# The TFRKN README's example record, in the JSON form the file uses (the README prints a Python dict).
README_RECORD = json.loads("""{
  "case_id": 3,
  "two_hop": "What is the notable work written by the author of \\"Paradiso\\"?",
  "fact1_query": ["Who authored Paradiso?", "To whom is the creation of Paradiso attributed?",
                  "Whose mind conceived Paradiso?", "Who penned the words that comprise Paradiso?",
                  "Which literary genius brought Paradiso into existence?",
                  "From whose imagination did Paradiso spring?", "Who crafted the narrative world of Paradiso?"],
  "fact1_ans": "Dante Alighieri",
  "fact2_query": ["What is Dante Alighieri's most famous work?",
                  "Which work brought Dante Alighieri the most recognition?",
                  "For which work is Dante Alighieri best known?",
                  "What is the title of Dante Alighieri's magnum opus?",
                  "Which literary creation stands as Dante Alighieri's crowning achievement?",
                  "What is the name of the work that immortalized Dante Alighieri?"],
  "fact2_ans": "The Divine Comedy",
  "two_hop_id": [["Q2713307", "P50", "Q1067"], ["Q1067", "P800", "Q40185"]],
  "two_hop_label": [["Paradiso", "author", "Dante Alighieri"], ["Dante Alighieri", "notable work", "The Divine Comedy"]]
}""")


def mquake_case(case_id: int, n_hops: int = 2) -> dict:
    """A case shaped like MQuAKE-CF-3k's (counterfactual fields included, as the loader must skip them)."""
    hops = [
        {"question": "What is the country of citizenship of Ellie Kemper?", "cloze": "Ellie Kemper is a citizen of",
         "answer": "United States of America", "answer_alias": ["USA", "the United States", "America"]},
        {"question": "What is the capital of United States of America?", "cloze": "The capital of USA is",
         "answer": "Washington, D.C.", "answer_alias": ["Washington", "DC"]},
        {"question": "Who is the head of state of Washington, D.C.?", "cloze": "The mayor of DC is",
         "answer": "Muriel Bowser", "answer_alias": []},
    ][:n_hops]
    triples = [["Q72077", "P27", "Q30"], ["Q30", "P36", "Q61"], ["Q61", "P35", "Q1"]][:n_hops]
    labels = [["Ellie Kemper", "country of citizenship", "United States of America"],
              ["United States of America", "capital", "Washington, D.C."],
              ["Washington, D.C.", "head of state", "Muriel Bowser"]][:n_hops]
    return {
        "case_id": case_id,
        "requested_rewrite": [{"prompt": "{} is a citizen of", "relation_id": "P27", "subject": "Ellie Kemper",
                               "target_new": {"str": "Croatia", "id": "Q224"},
                               "target_true": {"str": "United States of America", "id": "Q30"}}],
        "questions": ["What is the capital of the country Ellie Kemper is a citizen of?",
                      "Which city is the capital of Ellie Kemper's country of citizenship?",
                      "Ellie Kemper is a citizen of a country whose capital is what?"],
        "answer": hops[-1]["answer"], "answer_alias": ["Washington DC", "D.C."],
        "new_answer": "Zagreb", "new_answer_alias": ["Zagreb, Croatia"],
        "single_hops": hops, "new_single_hops": copy.deepcopy(hops),
        "orig": {"triples": triples, "triples_labeled": labels, "new_triples": triples,
                 "new_triples_labeled": labels, "edit_triples": triples[:1]},
    }


def test_readme_record_loads_exactly(tmp_path):
    path = tmp_path / "TFRKN.json"
    path.write_text(json.dumps([README_RECORD]))
    (item,) = load_items(path)
    assert item.case_id == 3 and item.fact1_ans == "Dante Alighieri" and item.answer == "The Divine Comedy"
    assert len(item.fact1_query) == 7 and len(item.fact2_query) == 6
    assert item.two_hop_id == (("Q2713307", "P50", "Q1067"), ("Q1067", "P800", "Q40185"))
    assert item.hop(2).relation == "P800" and item.hop(1).triple_label[2] == item.bridge
    assert item.to_record() == README_RECORD  # no optional fields invented; round-trips unchanged
    assert load_tfrkn([README_RECORD]) == [item]


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.pop("fact2_ans"), r"record 1 \(case_id 3\): field 'fact2_ans': is missing"),
    (lambda r: r.update(fact1_query="Who authored Paradiso?"), r"record 1 \(case_id 3\): field 'fact1_query': expected a list"),
    (lambda r: r.update(fact2_query=[]), r"record 1 \(case_id 3\): field 'fact2_query': is an empty list"),
    (lambda r: r.update(case_id="3"), r"record 1 \(case_id '3'\): field 'case_id': expected an integer"),
    (lambda r: r.update(fact1_ans=7), r"record 1 \(case_id 3\): field 'fact1_ans': expected a string"),
    (lambda r: r.update(two_hop_id=[["Q1", "P50"]]), r"record 1 \(case_id 3\): field 'two_hop_id': expected \[\[s, r1, o1\]"),
    (lambda r: r.update(fact1_query=["ok", ""]), r"record 1 \(case_id 3\): field 'fact1_query': element 1"),
    (lambda r: r.update(fact1_ans_alias="Dante"), r"record 1 \(case_id 3\): field 'fact1_ans_alias': expected a list"),
    (lambda r: r.update(case_id=0), r"record 1 \(case_id 0\): field 'case_id': 0 repeats record 0"),
])
def test_malformed_records_name_index_and_field(mutate, match):
    good = dict(README_RECORD, case_id=0)
    bad = copy.deepcopy(README_RECORD)
    mutate(bad)
    with pytest.raises(ItemFormatError, match=match):
        load_tfrkn([good, bad])


def test_not_a_dataset():
    with pytest.raises(ItemFormatError, match="JSON list of records"):
        load_tfrkn(5)
    with pytest.raises(ItemFormatError, match="record 0: expected a JSON object"):
        load_tfrkn([[1, 2]])


def test_mquake_two_hop_cases_with_aliases(tmp_path):
    path = tmp_path / "MQuAKE-CF-3k.json"
    path.write_text(json.dumps([mquake_case(1), mquake_case(2, n_hops=3), mquake_case(5)]))
    items = load_items(path)
    assert [it.case_id for it in items] == [1, 5]  # the 3-hop case is skipped
    item = items[0]
    assert item.two_hop == "What is the capital of the country Ellie Kemper is a citizen of?"
    assert len(item.two_hop_paraphrases) == 2
    assert item.fact1_query == ("What is the country of citizenship of Ellie Kemper?",)
    assert item.fact1_ans == "United States of America" and "USA" in item.fact1_ans_alias
    assert item.fact2_ans == "Washington, D.C." and item.fact2_ans_alias == ("Washington", "DC")
    assert item.answer_aliases == ("Washington DC", "D.C.", "Washington", "DC")
    assert item.two_hop_id[1] == ("Q30", "P36", "Q61") and item.two_hop_label[0][1] == "country of citizenship"
    assert relation_answers(items, hop=2)["P36"] == ("Washington, D.C.", "Washington", "DC")


def test_mquake_malformed_case_is_named():
    case = mquake_case(1)
    del case["single_hops"][1]["answer"]
    with pytest.raises(ItemFormatError, match=r"record 1 \(case_id 1\): field 'single_hops': element 1"):
        load_mquake([mquake_case(0), case])
    case = mquake_case(1)
    case["orig"]["triples"] = [["Q1", "P1", "Q2"]]
    with pytest.raises(ItemFormatError, match=r"record 1 \(case_id 1\): field 'two_hop_id'"):
        load_mquake([mquake_case(0), case])


@pytest.mark.parametrize("name", ["items.json", "items.json.gz"])
def test_save_and_load_round_trip(tmp_path, name):
    item = TwoHopItem(case_id=9, two_hop="Q?", fact1_query=("a?",), fact1_ans="B", fact2_query=("b?",),
                      fact2_ans="C", two_hop_id=(("a", "r", "b"), ("b", "s", "c")),
                      two_hop_label=(("A", "r", "B"), ("B", "s", "C")), fact1_ans_alias=("Bee",))
    bare = save_items([item], tmp_path / name)
    assert load_items(bare) == [item] and load_metadata(bare) == {}
    wrapped = save_items([item], tmp_path / f"meta-{name}", metadata={"attribution": "x"})
    assert load_items(wrapped) == [item] and load_metadata(wrapped) == {"attribution": "x"}
    assert wrapped.read_bytes() == save_items([item], tmp_path / f"again-{name}", {"attribution": "x"}).read_bytes()
