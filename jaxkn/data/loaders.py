"""Reading and writing two-hop datasets: the paper's TFRKN.json, MQuAKE's JSON, and jaxkn's built files.

Formats (JSON or JSON Lines, optionally gzip-compressed; gzip is recognised by content):
- TFRKN: a list of records as the TFRKN README documents them (`jaxkn.data.items`).
- jaxkn's built file: `{"format": "tfrkn", "metadata": {...}, "items": [TFRKN records]}`; the metadata carries
  the sources, their versions and licences (GeoNames data is CC BY 4.0 and asks for attribution).
- MQuAKE (MQuAKE-CF-3k, MQuAKE-T): a list of cases with `questions`, `answer`, `answer_alias`, `single_hops`
  ([{question, cloze, answer, answer_alias}]) and `orig` ({triples, triples_labeled, ...}). Only the 2-hop cases
  (two single hops) become items: `two_hop` = questions[0], the other questions are `two_hop_paraphrases`,
  hop h's query list is [single_hops[h].question], aliases are kept; counterfactual fields are not read.

- JSON Lines: one JSON record per line (`.jsonl`, or any file whose content is one object per line) holds the
  records of a TFRKN or MQuAKE list.

`load_items(path)` detects the format. Every loader validates all records and raises one `ItemFormatError`
listing every bad record (file, index, case_id, field); a file that is empty or not JSON is a `JSONFileError`
naming the file, line and column.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxkn.data.items import FIELD_SPELLINGS, ItemFormatError, RecordProblem, TwoHopItem, record_problems
from jaxkn.validation import json_error, read_json_text

BUILT_FORMAT = "tfrkn"
WHAT = "a dataset: a JSON list of records, a jaxkn built file or JSON Lines"


def _is_jsonl_name(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def _parse_jsonl(text: str, path: Path) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise json_error(f"{path} (JSON Lines)", e, line_offset=lineno - 1) from None
    return records


def _read_json(path: str | Path) -> Any:
    """A dataset file's content: JSON, or JSON Lines as a list (by name, or when the content is one value per
    line); errors name the file, line and column."""
    path = Path(path)
    text = read_json_text(path, what=WHAT)
    if _is_jsonl_name(path):
        return _parse_jsonl(text, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and e.lineno > 1 and _first_line_is_json(text):
            return _parse_jsonl(text, path)  # one value on the first line, more on later lines: JSON Lines
        raise json_error(path, e) from None


def _first_line_is_json(text: str) -> bool:
    first = next(line for line in text.splitlines() if line.strip())
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return True


def _records(source) -> tuple[Any, Path | None]:
    """(parsed content, the file it came from or None for in-memory data)."""
    if isinstance(source, (str, Path)):
        return _read_json(source), Path(source)
    return source, None


def _no_records(path: Path | None, what: str = "an empty JSON list") -> ItemFormatError:
    return ItemFormatError(f"{path if path is not None else 'the dataset'}: the dataset has no records ({what})")


def _duplicate_ids(items: Sequence[tuple[int, TwoHopItem]]) -> list[RecordProblem]:
    seen: dict[int, int] = {}
    problems = []
    for index, item in items:
        if item.case_id in seen:
            problems.append(RecordProblem(index, item.case_id, "case_id",
                                          f"{item.case_id} repeats record {seen[item.case_id]}"))
        else:
            seen[item.case_id] = index
    return problems


def _validated(records: Sequence[tuple[int, Any]], path: Path | None) -> list[TwoHopItem]:
    """Items of (index, record) pairs; one ItemFormatError listing every bad record and repeated id."""
    items, problems = [], []
    for index, rec in records:
        item, found = record_problems(rec, index)
        problems.extend(found)
        if item is not None:
            items.append((index, item))
    problems.extend(_duplicate_ids(items))
    if problems:
        raise ItemFormatError.from_problems(sorted(problems, key=lambda p: p.index), path)
    return [item for _, item in items]


def load_tfrkn(source) -> list[TwoHopItem]:
    """Items of a TFRKN dataset: a path (.json / .jsonl, optionally .gz), a list of records, or jaxkn's
    built-file object. A file with no records is refused (an in-memory empty list gives [])."""
    data, path = _records(source)
    prefix = "" if path is None else f"{path}: "
    if isinstance(data, dict):
        if data.get("format") != BUILT_FORMAT or not isinstance(data.get("items"), list):
            raise ItemFormatError(f"{prefix}expected a TFRKN list of records or {{'format': 'tfrkn', 'items': "
                                  f"[...]}}, got an object with keys {sorted(data)[:8]}")
        data = data["items"]
    if not isinstance(data, list):
        raise ItemFormatError(f"{prefix}a TFRKN dataset is a JSON list of records, got {type(data).__name__}")
    if not data and path is not None:
        raise _no_records(path)
    return _validated(list(enumerate(data)), path)


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a jaxkn built file ({} for a bare TFRKN or MQuAKE list)."""
    data = _read_json(path)
    return dict(data.get("metadata", {})) if isinstance(data, dict) else {}


def _mquake_error(rec: Any, index: int, field: str | None, problem: str) -> ItemFormatError:
    return ItemFormatError.from_problems([RecordProblem(index, _case_id(rec), field, problem)])


def _field(rec: dict, index: int, field: str, kind: type) -> Any:
    if field not in rec:
        raise _mquake_error(rec, index, field, "is missing")
    if not isinstance(rec[field], kind):
        raise _mquake_error(rec, index, field, f"expected {kind.__name__}, got {type(rec[field]).__name__}")
    return rec[field]


def _aliases(d: dict) -> list[str]:
    """MQuAKE's `answer_alias` plus `answer_extended` (MQuAKE-T's extra accepted answers), without repeats."""
    return list(dict.fromkeys(list(d.get("answer_alias", []) or []) + list(d.get("answer_extended", []) or [])))


def mquake_to_record(rec: Any, index: int, *, cloze: bool = False) -> dict[str, Any] | None:
    """One MQuAKE case as a TFRKN record with aliases, or None when it is not a 2-hop case.

    MQuAKE has one question per hop; with `cloze`, the hop's cloze statement ("The capital of France is") is a
    second query, so the study's out-of-sample single-hop level (which leaves one query out) is defined.

    Raises ItemFormatError for the first field that is not MQuAKE's shape (the loader collects them all).
    """
    if not isinstance(rec, dict):
        raise _mquake_error(rec, index, None, f"expected a JSON object, got {type(rec).__name__}")
    hops = _field(rec, index, "single_hops", list)
    if len(hops) != 2:
        return None
    questions = _field(rec, index, "questions", list)
    if not questions:
        raise _mquake_error(rec, index, "questions", "is an empty list")
    orig = _field(rec, index, "orig", dict)
    for h, hop in enumerate(hops):
        if not isinstance(hop, dict) or "question" not in hop or "answer" not in hop:
            raise _mquake_error(rec, index, "single_hops", f"element {h} needs 'question' and 'answer'")
    return {
        "case_id": rec.get("case_id", index),
        "two_hop": questions[0],
        "two_hop_paraphrases": list(questions[1:]),
        "fact1_query": _queries(hops[0], cloze), "fact1_ans": hops[0]["answer"],
        "fact1_ans_alias": _aliases(hops[0]),
        "fact2_query": _queries(hops[1], cloze), "fact2_ans": hops[1]["answer"],
        "fact2_ans_alias": _aliases(hops[1]),
        "two_hop_ans_alias": _aliases(rec),
        "two_hop_id": orig.get("triples"),
        "two_hop_label": orig.get("triples_labeled"),
    }


def _queries(hop: dict, cloze: bool) -> list[str]:
    extra = [hop["cloze"]] if cloze and isinstance(hop.get("cloze"), str) and hop["cloze"].strip() else []
    return [hop["question"], *extra]


def _case_id(rec: Any) -> Any:
    value = rec.get("case_id") if isinstance(rec, dict) else None
    return value if isinstance(value, (int, str)) else None


def load_mquake(source, *, cloze: bool = False) -> list[TwoHopItem]:
    """The 2-hop cases of an MQuAKE file (path or list of cases) as items; other cases are skipped.

    cloze: add each hop's cloze statement as a second query (see `mquake_to_record`)."""
    data, path = _records(source)
    prefix = "" if path is None else f"{path}: "
    if not isinstance(data, list):
        raise ItemFormatError(f"{prefix}an MQuAKE dataset is a JSON list of cases, got {type(data).__name__}")
    if not data and path is not None:
        raise _no_records(path)
    mapped, problems = [], []
    for index, rec in enumerate(data):
        try:
            record = mquake_to_record(rec, index, cloze=cloze)
        except ItemFormatError as e:  # a case's first problem with MQuAKE's shape; the other cases go on
            problems.extend(e.problems)
            continue
        if record is not None:
            mapped.append((index, record))  # validated under the MQuAKE index: errors point into the file
    try:
        items = _validated(mapped, path)
    except ItemFormatError as e:
        problems.extend(e.problems)
    if problems:
        raise ItemFormatError.from_problems(sorted(problems, key=lambda p: p.index), path)
    return items


TFRKN_KEYS = ("two_hop", "fact1_query", *FIELD_SPELLINGS)


def detect_format(data: Any, source: str | Path | None = None) -> str:
    """"tfrkn" or "mquake" for parsed JSON (decided by the first records); raises ItemFormatError otherwise."""
    prefix = "" if source is None else f"{source}: "
    if isinstance(data, dict) and data.get("format") == BUILT_FORMAT:
        return "tfrkn"
    if isinstance(data, list):
        if not data:
            raise _no_records(source)
        head = [rec for rec in data[:10] if isinstance(rec, dict)]
        if any("single_hops" in rec for rec in head):
            return "mquake"
        if any(key in rec for rec in head for key in TFRKN_KEYS):
            return "tfrkn"
    found = (f"a list whose first record is {type(data[0]).__name__}"
             + (f" with keys {sorted(data[0])[:8]}" if isinstance(data[0], dict) else "")
             if isinstance(data, list) else f"a JSON {type(data).__name__}")
    raise ItemFormatError(f"{prefix}unrecognised dataset ({found}): expected a TFRKN list (records with "
                          f"'two_hop', 'fact1_query', ...), jaxkn's built file, or an MQuAKE list (cases with "
                          f"'single_hops')")


def load_items(path: str | Path, *, mquake_cloze: bool = False) -> list[TwoHopItem]:
    """Items of a TFRKN, jaxkn-built or MQuAKE file (JSON or JSON Lines), detected from its content.

    mquake_cloze: for an MQuAKE file, each hop's cloze statement becomes a second query."""
    data = _read_json(path)
    if detect_format(data, path) == "mquake":
        def loader(d):
            return load_mquake(d, cloze=mquake_cloze)
    else:
        loader = load_tfrkn
    return _with_source(loader, data, Path(path))


def _with_source(loader, data, path: Path) -> list[TwoHopItem]:
    """`loader(data)` with the file named in its errors (the data is parsed once, by the caller)."""
    try:
        items = loader(data)
    except ItemFormatError as e:
        if e.problems:
            raise ItemFormatError.from_problems(e.problems, path) from None
        raise ItemFormatError(f"{path}: {e}") from None
    if not items:
        raise _no_records(path, "no usable records: an MQuAKE file with no 2-hop case, or an empty item list")
    return items


def save_items(items: Sequence[TwoHopItem], path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Writes items as JSON (gzip when the path ends in .gz): the bare TFRKN list when `metadata` is None,
    else jaxkn's built-file object with the metadata. Deterministic bytes for equal input.

    The file is written beside `path` and renamed over it when complete, so an interrupted write never leaves
    a truncated dataset (an existing file is replaced; `python -m jaxkn.data build` asks for --overwrite).
    """
    path = Path(path)
    records = [item.to_record() for item in items]
    data: Any = records if metadata is None else {"format": BUILT_FORMAT, "metadata": metadata, "items": records}
    text = json.dumps(data, ensure_ascii=False, indent=None, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.jaxkn-tmp-{os.getpid()}")
    try:
        if path.suffix == ".gz":
            # mtime=0 keeps the gzip header, and so the file, byte-identical across builds.
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
                f.write(text.encode("utf-8"))
        else:
            tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
