"""The two-hop item: one TFRKN record (METHOD.md §1) as a frozen, validated value.

A TFRKN file is a JSON list of dicts with the fields `case_id`, `two_hop`, `fact1_query`, `fact1_ans`,
`fact2_query`, `fact2_ans`, `two_hop_id`, `two_hop_label` (the paper's README, in its JSON form). jaxkn adds
optional fields, written only when non-empty so a plain TFRKN record round-trips unchanged:
- `fact1_ans_alias`, `fact2_ans_alias`, `two_hop_ans_alias`: other names of the hop answers / the final answer;
- `two_hop_paraphrases`: further phrasings of the two-hop question (MQuAKE has three per case).

Hop h (1 or 2) is the triple `two_hop_id[h-1]` = (subject, relation, object); the bridge entity is hop 1's object
and hop 2's subject. `record_to_item` raises `ItemFormatError` naming the record index and the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

REQUIRED_FIELDS = ("case_id", "two_hop", "fact1_query", "fact1_ans", "fact2_query", "fact2_ans", "two_hop_id",
                   "two_hop_label")
OPTIONAL_LIST_FIELDS = ("fact1_ans_alias", "fact2_ans_alias", "two_hop_ans_alias", "two_hop_paraphrases")

Triple = tuple[str, str, str]


class ItemFormatError(ValueError):
    """A record does not have the TFRKN shape; the message names the record index and the field."""


class Hop(NamedTuple):
    """One single-hop fact of an item: its paraphrased queries, answer (+ aliases), triple ids and labels."""

    queries: tuple[str, ...]
    answer: str
    aliases: tuple[str, ...]
    triple_id: Triple
    triple_label: Triple

    @property
    def relation(self) -> str:
        return self.triple_id[1]


@dataclass(frozen=True, kw_only=True)
class TwoHopItem:
    """A two-hop question and its two single-hop facts.

    Attributes:
      case_id: the record's id (unique within a dataset).
      two_hop: the two-hop question.
      fact1_query / fact2_query: paraphrased questions of hop 1 / hop 2 (at least one each).
      fact1_ans: hop 1's answer, the bridge entity. fact2_ans: hop 2's answer, the two-hop answer.
      two_hop_id: ((s, r1, o1), (o1, r2, o2)) as ids (Wikidata ids in the paper; ours are e.g. `iso3166:JP`).
      two_hop_label: the same triples as labels.
      fact1_ans_alias / fact2_ans_alias / two_hop_ans_alias: other accepted answers (may be empty).
      two_hop_paraphrases: other phrasings of the two-hop question (may be empty).
    """

    case_id: int
    two_hop: str
    fact1_query: tuple[str, ...]
    fact1_ans: str
    fact2_query: tuple[str, ...]
    fact2_ans: str
    two_hop_id: tuple[Triple, Triple]
    two_hop_label: tuple[Triple, Triple]
    fact1_ans_alias: tuple[str, ...] = ()
    fact2_ans_alias: tuple[str, ...] = ()
    two_hop_ans_alias: tuple[str, ...] = ()
    two_hop_paraphrases: tuple[str, ...] = ()

    @property
    def bridge(self) -> str:
        return self.fact1_ans

    @property
    def answer(self) -> str:
        return self.fact2_ans

    @property
    def answer_aliases(self) -> tuple[str, ...]:
        """Accepted names of the two-hop answer: its own aliases plus hop 2's, without repeats."""
        return tuple(dict.fromkeys(self.two_hop_ans_alias + self.fact2_ans_alias))

    def hop(self, h: int) -> Hop:
        """Hop 1 or 2 as a `Hop`."""
        if h == 1:
            return Hop(self.fact1_query, self.fact1_ans, self.fact1_ans_alias, self.two_hop_id[0],
                       self.two_hop_label[0])
        if h == 2:
            return Hop(self.fact2_query, self.fact2_ans, self.fact2_ans_alias, self.two_hop_id[1],
                       self.two_hop_label[1])
        raise ValueError(f"hop must be 1 or 2, got {h!r}")

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready TFRKN dict (lists, not tuples); optional fields only when non-empty."""
        rec: dict[str, Any] = {
            "case_id": self.case_id, "two_hop": self.two_hop,
            "fact1_query": list(self.fact1_query), "fact1_ans": self.fact1_ans,
            "fact2_query": list(self.fact2_query), "fact2_ans": self.fact2_ans,
            "two_hop_id": [list(t) for t in self.two_hop_id],
            "two_hop_label": [list(t) for t in self.two_hop_label],
        }
        for name in OPTIONAL_LIST_FIELDS:
            if getattr(self, name):
                rec[name] = list(getattr(self, name))
        return rec


def _fail(index: int, field: str, problem: str) -> ItemFormatError:
    return ItemFormatError(f"record {index}: field {field!r}: {problem}")


def _text(rec: dict, index: int, field: str) -> str:
    value = rec[field]
    if not isinstance(value, str):
        raise _fail(index, field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise _fail(index, field, "is empty")
    return value


def _texts(rec: dict, index: int, field: str, *, allow_empty: bool) -> tuple[str, ...]:
    value = rec[field]
    if not isinstance(value, list):
        raise _fail(index, field, f"expected a list of strings, got {type(value).__name__}")
    if not value and not allow_empty:
        raise _fail(index, field, "is an empty list (each hop needs at least one query)")
    for j, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise _fail(index, field, f"element {j} is not a non-empty string: {v!r}")
    return tuple(value)


def _triples(rec: dict, index: int, field: str) -> tuple[Triple, Triple]:
    value = rec[field]
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(t, list) and len(t) == 3 and all(isinstance(x, str) for x in t) for t in value))
    if not ok:
        raise _fail(index, field, f"expected [[s, r1, o1], [o1, r2, o2]] (two lists of 3 strings), got {value!r}")
    return tuple(value[0]), tuple(value[1])


def record_to_item(rec: Any, index: int) -> TwoHopItem:
    """Validates one TFRKN record (a dict from JSON) and returns it as a `TwoHopItem`.

    Raises:
      ItemFormatError: naming `index` and the first field that is missing or malformed.
    """
    if not isinstance(rec, dict):
        raise ItemFormatError(f"record {index}: expected a JSON object, got {type(rec).__name__}")
    for field in REQUIRED_FIELDS:
        if field not in rec:
            raise _fail(index, field, "is missing")
    case_id = rec["case_id"]
    if not isinstance(case_id, int) or isinstance(case_id, bool):
        raise _fail(index, "case_id", f"expected an integer, got {type(case_id).__name__}")
    optional = {f: _texts(rec, index, f, allow_empty=True) for f in OPTIONAL_LIST_FIELDS if f in rec}
    return TwoHopItem(
        case_id=case_id, two_hop=_text(rec, index, "two_hop"),
        fact1_query=_texts(rec, index, "fact1_query", allow_empty=False), fact1_ans=_text(rec, index, "fact1_ans"),
        fact2_query=_texts(rec, index, "fact2_query", allow_empty=False), fact2_ans=_text(rec, index, "fact2_ans"),
        two_hop_id=_triples(rec, index, "two_hop_id"), two_hop_label=_triples(rec, index, "two_hop_label"),
        **optional,
    )


def relation_answers(items, hop: int | None = None) -> dict[str, tuple[str, ...]]:
    """relation id -> every answer and alias its facts have across `items` (hop 1, 2, or both when None).

    These are the competing answers the judge needs: a gold "Sudan" found only inside a generated "South Sudan",
    a longer answer of the same relation, is rejected (see `jaxkn.data.judge`).
    """
    out: dict[str, dict[str, None]] = {}
    for item in items:
        for h in (1, 2) if hop is None else (hop,):
            fact = item.hop(h)
            names = out.setdefault(fact.relation, {})
            names.update(dict.fromkeys((fact.answer,) + fact.aliases))
    return {r: tuple(v) for r, v in out.items()}
