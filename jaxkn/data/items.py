"""The two-hop item: one TFRKN record (METHOD.md §1) as a frozen, validated value.

A TFRKN file is a JSON list of dicts with the fields `case_id`, `two_hop`, `fact1_query`, `fact1_ans`,
`fact2_query`, `fact2_ans`, `two_hop_id`, `two_hop_label` (the paper's README, in its JSON form). jaxkn adds
optional fields, written only when non-empty so a plain TFRKN record round-trips unchanged:
- `fact1_ans_alias`, `fact2_ans_alias`, `two_hop_ans_alias`: other names of the hop answers / the final answer;
- `two_hop_paraphrases`: further phrasings of the two-hop question (MQuAKE has three per case).

Hop h (1 or 2) is the triple `two_hop_id[h-1]` = (subject, relation, object); the bridge entity is hop 1's object
and hop 2's subject. `record_to_item` raises `ItemFormatError` naming the record index, its case_id and every
field at fault; the README's spelling `two-hop` is read as `two_hop`. `record_hash(item)` is a sha256 of the
content, so results can be keyed to what was asked, not only to a case_id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from jaxkn.errors import UserInputError

REQUIRED_FIELDS = ("case_id", "two_hop", "fact1_query", "fact1_ans", "fact2_query", "fact2_ans", "two_hop_id",
                   "two_hop_label")
OPTIONAL_LIST_FIELDS = ("fact1_ans_alias", "fact2_ans_alias", "two_hop_ans_alias", "two_hop_paraphrases")

FIELD_SPELLINGS = {"two-hop": "two_hop"}  # the TFRKN README writes `two-hop`; its JSON uses `two_hop`
MAX_LISTED_PROBLEMS = 20

Triple = tuple[str, str, str]


class RecordProblem(NamedTuple):
    """One thing wrong with one record: its index in the file, its case_id (None when unknown), the field."""

    index: int
    case_id: Any
    field: str | None
    problem: str

    def __str__(self) -> str:
        where = f"record {self.index}" + ("" if self.case_id is None else f" (case_id {self.case_id!r})")
        return f"{where}: {self.problem}" if self.field is None else f"{where}: field {self.field!r}: {self.problem}"


class ItemFormatError(UserInputError):
    """Records that do not have the TFRKN shape; `problems` lists every one (index, case_id, field).

    The message names the file (when known) and lists up to `MAX_LISTED_PROBLEMS` problems and the count.
    """

    def __init__(self, message: str, problems: tuple[RecordProblem, ...] = ()):
        super().__init__(message)
        self.problems = tuple(problems)

    @classmethod
    def from_problems(cls, problems, source=None) -> ItemFormatError:
        problems = tuple(problems)
        prefix = "" if source is None else f"{source}: "
        if len(problems) == 1:
            return cls(f"{prefix}{problems[0]}", problems)
        n_records = len({p.index for p in problems})
        lines = [f"  {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
        if len(problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more problems")
        head = f"{prefix}{len(problems)} problems in {n_records} record{'s' * (n_records != 1)}:"
        return cls("\n".join([head, *lines]), problems)


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


def _text(value) -> tuple[str | None, str | None]:
    """(value, None) or (None, what is wrong); the same contract for the helpers below."""
    if not isinstance(value, str):
        return None, f"expected a string, got {type(value).__name__}"
    if not value.strip():
        return None, "is empty"
    return value, None


def _texts(value, *, allow_empty: bool) -> tuple[tuple[str, ...] | None, str | None]:
    if not isinstance(value, list):
        return None, f"expected a list of strings, got {type(value).__name__}"
    if not value and not allow_empty:
        return None, "is an empty list (each hop needs at least one query)"
    for j, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            return None, f"element {j} is not a non-empty string: {v!r}"
    return tuple(value), None


def _triples(value) -> tuple[tuple[Triple, Triple] | None, str | None]:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(t, list) and len(t) == 3 and all(isinstance(x, str) for x in t) for t in value))
    if not ok:
        return None, f"expected [[s, r1, o1], [o1, r2, o2]] (two lists of 3 strings), got {value!r}"
    return (tuple(value[0]), tuple(value[1])), None


def _case_id(value) -> tuple[int | None, str | None]:
    if not isinstance(value, int) or isinstance(value, bool):
        return None, f"expected an integer, got {type(value).__name__}"
    return value, None


_PARSERS = {  # in the README's field order, so a record's problems read in that order
    "case_id": _case_id, "two_hop": _text,
    "fact1_query": lambda v: _texts(v, allow_empty=False), "fact1_ans": _text,
    "fact2_query": lambda v: _texts(v, allow_empty=False), "fact2_ans": _text,
    "two_hop_id": _triples, "two_hop_label": _triples,
    **{f: (lambda v: _texts(v, allow_empty=True)) for f in OPTIONAL_LIST_FIELDS},
}


def _respelled(rec: dict, problem) -> dict:
    """`rec` with the README's spellings (`two-hop`) under the JSON names (`two_hop`)."""
    rec = dict(rec)
    for spelling, name in FIELD_SPELLINGS.items():
        if spelling in rec:
            value = rec.pop(spelling)
            if name in rec and rec[name] != value:
                problem(spelling, f"holds another value than {name!r} (they are the same field)")
            rec.setdefault(name, value)
    return rec


def record_problems(rec: Any, index: int) -> tuple[TwoHopItem | None, list[RecordProblem]]:
    """Validates one TFRKN record (a dict from JSON): (the item, []) or (None, every problem found)."""
    if not isinstance(rec, dict):
        return None, [RecordProblem(index, None, None, f"expected a JSON object, got {type(rec).__name__}")]
    case_id = rec.get("case_id")
    case_id = case_id if isinstance(case_id, (int, str)) else None
    problems: list[RecordProblem] = []

    def problem(field: str, text: str) -> None:
        problems.append(RecordProblem(index, case_id, field, text))

    rec = _respelled(rec, problem)
    values = {}
    for field, parse in _PARSERS.items():
        if field not in rec:
            if field in REQUIRED_FIELDS:
                problem(field, "is missing")
            continue
        value, error = parse(rec[field])
        if error is None:
            values[field] = value
        else:
            problem(field, error)
    return (None, problems) if problems else (TwoHopItem(**values), [])


def record_to_item(rec: Any, index: int) -> TwoHopItem:
    """Validates one TFRKN record (a dict from JSON) and returns it as a `TwoHopItem`.

    Raises:
      ItemFormatError: naming `index`, the case_id and every field that is missing or malformed.
    """
    item, problems = record_problems(rec, index)
    if problems:
        raise ItemFormatError.from_problems(problems)
    return item


def record_hash(item: TwoHopItem) -> str:
    """sha256 (hex) of the canonical JSON of an item's content: every field but `case_id`.

    Those are the fields the study reads (questions, answers and aliases, triples and labels); the case_id is
    the key results are stored under, so equal content under another id hashes the same. Stable across
    Python versions and record key order (sorted keys, no whitespace, UTF-8).
    """
    content = {k: v for k, v in item.to_record().items() if k != "case_id"}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dataset_hashes(items) -> dict[int, str]:
    """case_id -> `record_hash` for a dataset, so results can be keyed to content (ids must be unique)."""
    out: dict[int, str] = {}
    for index, item in enumerate(items):
        if item.case_id in out:
            raise ItemFormatError(f"record {index}: field 'case_id': {item.case_id} repeats an earlier record")
        out[item.case_id] = record_hash(item)
    return out


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
