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

import atexit
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxkn.errors import UserInputError
from jaxkn.experiments.results import SCHEMA_VERSION, FactResult, ItemResult, from_json, to_json


class ResultsFolderError(UserInputError):
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


OWN_NAMES = {"run.json", "run.lock", "filter.json", "filter_cache.json", "timings.json", "items", "facts",
             "partial", "report.md", "summary.json", "items.csv", "items.parquet", "facts.parquet", "figures"}


class ResultStore:
    """The results folder of one run (see the module docstring).

    The folder is claimed before any work: it must be new, empty, or hold a run of this study (`run.json`,
    the marker); a lock (`run.lock`: pid and host) keeps a second run out while one is working in it.

    Args:
      out: the folder.
      fingerprint: `StudyConfig.fingerprint` of this run (model and every fact/item setting).
      model_id: the model's identity, recorded.
      resume: continue a run found in the folder (without it, a folder with results is refused).
      settings: the run's settings dict, recorded so a refused resume names the settings that differ.
      dataset_hashes: case_id -> content hash of every record; a resume with changed records is refused,
        naming them.
    """

    def __init__(self, out: str | Path, fingerprint: str, model_id: str, *, resume: bool,
                 settings: dict | None = None, dataset_hashes: dict | None = None):
        self.root = Path(out)
        self.items_dir = self.root / "items"
        self.facts_dir = self.root / "facts"
        self.partial_dir = self.root / "partial"
        self._lock = None
        self._claim(fingerprint, model_id, resume, settings or {},
                    {str(k): v for k, v in (dataset_hashes or {}).items()})

    def _claim(self, fingerprint: str, model_id: str, resume: bool, settings: dict, hashes: dict) -> None:
        run_file = self.root / "run.json"
        has_results = self.items_dir.is_dir() and any(self.items_dir.glob("*.json"))
        if run_file.is_file():
            owner = read_json(run_file)
            if owner.get("schema") != SCHEMA_VERSION:
                raise ResultsFolderError(
                    f"{self.root} was written by another version of the study (schema {owner.get('schema')!r}, "
                    f"this version writes {SCHEMA_VERSION}); its results cannot be resumed: choose another --out")
            old = owner.get("dataset_hashes") or {}
            edited = [c for c in old if c in hashes and old[c] != hashes[c]]
            if owner.get("fingerprint") != fingerprint or edited:
                raise ResultsFolderError(self._why_different(owner, fingerprint, model_id, settings, hashes))
            hashes = {**old, **hashes}
            if has_results and not resume:
                raise ResultsFolderError(
                    f"{self.root} already holds {len(list(self.items_dir.glob('*.json')))} item results of this "
                    f"run; pass --resume to continue it, or choose another --out")
        else:
            refuse_foreign(self.root)
        self._lock = acquire_lock(self.root / "run.lock")
        write_json(run_file, {"fingerprint": fingerprint, "model_id": model_id, "schema": SCHEMA_VERSION,
                              "settings": settings, "dataset_hashes": hashes})

    def _why_different(self, owner: dict, fingerprint: str, model_id: str, settings: dict, hashes: dict) -> str:
        reasons = []
        if owner.get("model_id") != model_id:
            reasons.append(f"the model differs ({owner.get('model_id')!r} there, {model_id!r} now)")
        recorded = owner.get("settings") or {}
        changed = sorted(k for k in settings if k in recorded and recorded[k] != settings[k])
        if changed:
            reasons.append("settings differ: " + ", ".join(f"{k} ({recorded[k]!r} there, {settings[k]!r} now)"
                                                          for k in changed))
        old = owner.get("dataset_hashes") or {}
        edited = sorted((c for c in old if c in hashes and old[c] != hashes[c]), key=_case_order)
        if edited:
            reasons.append(f"the dataset changed: records with case_id {', '.join(edited[:20])}"
                           f"{' ...' if len(edited) > 20 else ''} have other content than the run used")
        if not reasons:
            reasons.append(f"fingerprint {owner.get('fingerprint')} there, {fingerprint} now")
        return (f"{self.root} holds results of another run ({'; '.join(reasons)}); resume it with its own settings "
                f"and data, or choose another --out")

    def close(self) -> None:
        """Releases the folder's lock (also released when the process ends)."""
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None

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

    def write_array(self, name: str, array) -> Path:
        """Writes a numpy array as `name` (.npy) atomically (temp file in the same folder, then rename)."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.asarray(array))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def read_array(self, name: str):
        return np.load(self.root / name, allow_pickle=False)  # never unpickle

    def read(self, name: str) -> Any | None:
        path = self.root / name
        return read_json(path) if path.is_file() else None

    def write(self, name: str, obj: Any) -> Path:
        return write_json(self.root / name, obj)

    # ---- a chunk's finished stages, so a kill loses at most the stage in flight --------------------------
    def chunk_stages(self, key: str) -> dict:
        path = self.partial_dir / f"{key}.json"
        return read_json(path) if path.is_file() else {}

    def write_chunk_stages(self, key: str, stages: dict) -> Path:
        return write_json(self.partial_dir / f"{key}.json", stages)

    def drop_chunk(self, key: str) -> None:
        (self.partial_dir / f"{key}.json").unlink(missing_ok=True)

    def start_clock(self, stage: str) -> None:
        """Starts timing `stage`; `tick()` adds the time since the last tick to timings.json."""
        self._clock = (stage, time.time())

    def tick(self) -> None:
        """Adds the wall time since the last tick to the running stage in timings.json, right away, so the
        time a killed run spent is still counted (stages tick after every unit of work they write)."""
        if getattr(self, "_clock", None) is None:
            return
        stage, since = self._clock
        now = time.time()
        timings = self.read("timings.json") or {}
        timings[stage] = timings.get(stage, 0.0) + now - since
        self.write("timings.json", timings)
        self._clock = (stage, now)


def refuse_foreign(out: str | Path) -> None:
    """Refuses an --out the study does not own: a file, or a non-empty folder without run.json (the user's)."""
    root = Path(out)
    if not root.exists() or (root / "run.json").is_file():
        return
    if not root.is_dir():
        raise ResultsFolderError(f"--out {root} is a file, not a folder")
    # run.lock alone is a run killed before it wrote run.json (a live one is refused by the lock itself)
    foreign = sorted(p.name for p in root.iterdir() if p.name != "run.lock")
    if foreign:
        raise ResultsFolderError(
            f"{root} is not empty and holds no run of this study ({', '.join(foreign[:5])}"
            f"{' ...' if len(foreign) > 5 else ''}); the study writes only into a new or empty folder or "
            f"one it owns: choose another --out")


def check_out(out: str | Path) -> None:
    """What can be refused before the model loads (which may take minutes): a foreign --out, or one that a
    live run holds. Writes nothing; `ResultStore` checks again, and takes the lock, once the model is loaded."""
    holder = _live_holder(Path(out) / "run.lock")
    if holder is not None:
        raise _busy(Path(out) / "run.lock", holder)
    refuse_foreign(out)


def _case_order(case_id: str):
    return (0, int(case_id)) if case_id.lstrip("-").isdigit() else (1, case_id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(path: Path) -> Path:
    """Creates `path` holding this process's pid and host; refuses while a live process holds it.

    A lock left by a process that is gone (same host, pid not running) is stale and taken over; a lock of
    another host cannot be checked and is refused with the command to remove it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _live_holder(path)
            if holder is None:
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise _busy(path, holder) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        atexit.register(lambda: path.unlink(missing_ok=True) if _holds(path, me) else None)
        return path
    raise ResultsFolderError(f"could not take the lock {path}")


def _live_holder(path: Path) -> dict | None:
    """The lock's {pid, host} unless there is no lock or it is stale (this host, its pid not running)."""
    if not path.exists():
        return None
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        holder = {}
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
        return None
    return holder


def _busy(path: Path, holder: dict) -> ResultsFolderError:
    return ResultsFolderError(
        f"another run is working in {path.parent} (pid {holder.get('pid')} on {holder.get('host')}, {path}); "
        f"wait for it, or remove {path} if that process is gone")


def _holds(path: Path, me: dict) -> bool:
    try:
        return json.loads(path.read_text()) == me
    except (OSError, json.JSONDecodeError):
        return False
