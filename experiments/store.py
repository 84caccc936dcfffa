"""Crash-safe results folder of the two-hop study: one JSON file per item and per fact, written atomically.

Layout of `--out`:
  run.json          the settings fingerprint and model id of the run that owns the folder
  filter.json       which candidate items passed the single-hop filter (with their hop answers)
  facts/<key>.json  a fact's knowledge neurons and single-hop levels (key: fact triple + attribution settings)
  items/<id>.json   one item's complete result
  report.md, summary.json, items.csv, figures/*.png   aggregates, recomputed from the files above

Every result file carries the schema version of `experiments.results`; a folder written by another version is
refused with a message, never misread. Every file is written to a temporary name in the same folder and renamed into place (`os.replace` is atomic on
POSIX), so a run killed at any moment leaves only complete files; `--resume` skips what exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from jaxkn.experiments.results import SCHEMA_VERSION, FactResult, ItemResult, from_json, to_json


class ResultsFolderError(RuntimeError):
    """The output folder belongs to a run with other settings (or is otherwise unusable)."""


def write_json(path: Path, obj: Any) -> Path:
    """Writes `obj` as JSON to `path` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def fact_key(triple, attribution_key: str) -> str:
    """File-safe key of one fact under one set of attribution settings."""
    text = json.dumps([list(triple), attribution_key])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class ResultStore:
    """The results folder of one run (see the module docstring)."""

    def __init__(self, out: str | Path, fingerprint: str, model_id: str, *, resume: bool):
        self.root = Path(out)
        self.items_dir = self.root / "items"
        self.facts_dir = self.root / "facts"
        self._claim(fingerprint, model_id, resume)

    def _claim(self, fingerprint: str, model_id: str, resume: bool) -> None:
        run_file = self.root / "run.json"
        has_results = self.items_dir.is_dir() and any(self.items_dir.glob("*.json"))
        if run_file.is_file():
            owner = read_json(run_file)
            if owner.get("schema") != SCHEMA_VERSION:
                raise ResultsFolderError(
                    f"{self.root} was written by another version of the study (schema {owner.get('schema')!r}, "
                    f"this version writes {SCHEMA_VERSION}); its results cannot be resumed: choose another --out")
            if owner.get("fingerprint") != fingerprint:
                raise ResultsFolderError(
                    f"{self.root} holds results of a run with other settings or another model "
                    f"(fingerprint {owner.get('fingerprint')} of {owner.get('model_id')!r}, this run "
                    f"{fingerprint} of {model_id!r}); choose another --out or delete that folder")
            if has_results and not resume:
                raise ResultsFolderError(
                    f"{self.root} already holds {len(list(self.items_dir.glob('*.json')))} item results of this "
                    f"run; pass --resume to continue it, or choose another --out")
        elif has_results:
            raise ResultsFolderError(f"{self.root} holds item results but no run.json; choose another --out")
        write_json(run_file, {"fingerprint": fingerprint, "model_id": model_id, "schema": SCHEMA_VERSION})

    def item_path(self, case_id) -> Path:
        return self.items_dir / f"{case_id}.json"

    def has_item(self, case_id) -> bool:
        return self.item_path(case_id).is_file()

    def write_item(self, result: ItemResult) -> Path:
        return write_json(self.item_path(result.case_id), to_json(result))

    def item(self, case_id) -> ItemResult:
        path = self.item_path(case_id)
        return from_json(ItemResult, read_json(path), str(path))

    def items(self) -> list[ItemResult]:
        """Every item result on disk, sorted by case id."""
        paths = sorted(self.items_dir.glob("*.json")) if self.items_dir.is_dir() else []
        return sorted((from_json(ItemResult, read_json(p), str(p)) for p in paths), key=lambda r: r.case_id)

    def fact(self, key: str) -> FactResult | None:
        path = self.facts_dir / f"{key}.json"
        return from_json(FactResult, read_json(path), str(path)) if path.is_file() else None

    def write_fact(self, key: str, result: FactResult) -> Path:
        return write_json(self.facts_dir / f"{key}.json", to_json(result))

    def read(self, name: str) -> Any | None:
        path = self.root / name
        return read_json(path) if path.is_file() else None

    def write(self, name: str, obj: Any) -> Path:
        return write_json(self.root / name, obj)
