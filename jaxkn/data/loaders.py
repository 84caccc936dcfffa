"""Reading and writing two-hop datasets: the paper's TFRKN.json, MQuAKE's JSON, and jaxkn's built files.

Formats (all JSON, optionally gzip-compressed when the path ends in `.gz`):
- TFRKN: a list of records as the TFRKN README documents them (`jaxkn.data.items`).
- jaxkn's built file: `{"format": "tfrkn", "metadata": {...}, "items": [TFRKN records]}`; the metadata carries
  the sources, their versions and licences (GeoNames data is CC BY 4.0 and asks for attribution).
- MQuAKE (MQuAKE-CF-3k, MQuAKE-T): a list of cases with `questions`, `answer`, `answer_alias`, `single_hops`
  ([{question, cloze, answer, answer_alias}]) and `orig` ({triples, triples_labeled, ...}). Only the 2-hop cases
  (two single hops) become items: `two_hop` = questions[0], the other questions are `two_hop_paraphrases`,
  hop h's query list is [single_hops[h].question], aliases are kept; counterfactual fields are not read.

`load_items(path)` detects the format. Every loader validates all records and raises `ItemFormatError` naming the
first bad record's index and field.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxkn.data.items import ItemFormatError, TwoHopItem, record_to_item

BUILT_FORMAT = "tfrkn"


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def _records(source) -> Any:
    return _read_json(source) if isinstance(source, (str, Path)) else source


def _check_unique_ids(items: Sequence[TwoHopItem]) -> None:
    seen: dict[int, int] = {}
    for index, item in enumerate(items):
        if item.case_id in seen:
            raise ItemFormatError(f"record {index}: field 'case_id': {item.case_id} repeats record {seen[item.case_id]}")
        seen[item.case_id] = index


def load_tfrkn(source) -> list[TwoHopItem]:
    """Items of a TFRKN dataset: a path (.json / .json.gz), a list of records, or jaxkn's built-file object."""
    data = _records(source)
    if isinstance(data, dict):
        if data.get("format") != BUILT_FORMAT or not isinstance(data.get("items"), list):
            raise ItemFormatError("expected a TFRKN list of records or {'format': 'tfrkn', 'items': [...]}")
        data = data["items"]
    if not isinstance(data, list):
        raise ItemFormatError(f"a TFRKN dataset is a JSON list of records, got {type(data).__name__}")
    items = [record_to_item(rec, i) for i, rec in enumerate(data)]
    _check_unique_ids(items)
    return items


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a jaxkn built file ({} for a bare TFRKN or MQuAKE list)."""
    data = _read_json(path)
    return dict(data.get("metadata", {})) if isinstance(data, dict) else {}


def _field(rec: dict, index: int, field: str, kind: type) -> Any:
    if field not in rec:
        raise ItemFormatError(f"record {index}: field {field!r}: is missing")
    if not isinstance(rec[field], kind):
        raise ItemFormatError(f"record {index}: field {field!r}: expected {kind.__name__}, "
                              f"got {type(rec[field]).__name__}")
    return rec[field]


def mquake_to_record(rec: Any, index: int) -> dict[str, Any] | None:
    """One MQuAKE case as a TFRKN record with aliases, or None when it is not a 2-hop case."""
    if not isinstance(rec, dict):
        raise ItemFormatError(f"record {index}: expected a JSON object, got {type(rec).__name__}")
    hops = _field(rec, index, "single_hops", list)
    if len(hops) != 2:
        return None
    questions = _field(rec, index, "questions", list)
    if not questions:
        raise ItemFormatError(f"record {index}: field 'questions': is an empty list")
    orig = _field(rec, index, "orig", dict)
    for h, hop in enumerate(hops):
        if not isinstance(hop, dict) or "question" not in hop or "answer" not in hop:
            raise ItemFormatError(f"record {index}: field 'single_hops': element {h} needs 'question' and 'answer'")
    return {
        "case_id": rec.get("case_id", index),
        "two_hop": questions[0],
        "two_hop_paraphrases": list(questions[1:]),
        "fact1_query": [hops[0]["question"]], "fact1_ans": hops[0]["answer"],
        "fact1_ans_alias": list(hops[0].get("answer_alias", [])),
        "fact2_query": [hops[1]["question"]], "fact2_ans": hops[1]["answer"],
        "fact2_ans_alias": list(hops[1].get("answer_alias", [])),
        "two_hop_ans_alias": list(rec.get("answer_alias", [])),
        "two_hop_id": orig.get("triples"),
        "two_hop_label": orig.get("triples_labeled"),
    }


def load_mquake(source) -> list[TwoHopItem]:
    """The 2-hop cases of an MQuAKE file (path or list of cases) as items; other cases are skipped."""
    data = _records(source)
    if not isinstance(data, list):
        raise ItemFormatError(f"an MQuAKE dataset is a JSON list of cases, got {type(data).__name__}")
    items = []
    for index, rec in enumerate(data):
        mapped = mquake_to_record(rec, index)
        if mapped is not None:
            # Validate under the MQuAKE index so the error points into the user's file.
            items.append(record_to_item(mapped, index))
    _check_unique_ids(items)
    return items


def detect_format(data: Any) -> str:
    """"tfrkn" or "mquake" for parsed JSON; raises ItemFormatError for anything else."""
    if isinstance(data, dict) and data.get("format") == BUILT_FORMAT:
        return "tfrkn"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if "single_hops" in data[0]:
            return "mquake"
        if "fact1_query" in data[0] or "two_hop" in data[0]:
            return "tfrkn"
    raise ItemFormatError("unrecognised dataset: expected a TFRKN list (records with 'two_hop', 'fact1_query', ...) "
                          "or an MQuAKE list (cases with 'single_hops')")


def load_items(path: str | Path) -> list[TwoHopItem]:
    """Items of a TFRKN, jaxkn-built or MQuAKE file, detected from its content."""
    data = _read_json(path)
    return load_mquake(data) if detect_format(data) == "mquake" else load_tfrkn(data)


def save_items(items: Sequence[TwoHopItem], path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Writes items as JSON (gzip when the path ends in .gz): the bare TFRKN list when `metadata` is None,
    else jaxkn's built-file object with the metadata. Deterministic bytes for equal input."""
    path = Path(path)
    records = [item.to_record() for item in items]
    data: Any = records if metadata is None else {"format": BUILT_FORMAT, "metadata": metadata, "items": records}
    text = json.dumps(data, ensure_ascii=False, indent=None, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0 keeps the gzip header, and so the file, byte-identical across builds.
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(text.encode("utf-8"))
    else:
        path.write_text(text, encoding="utf-8")
    return path
