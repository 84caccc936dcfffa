"""Hugging Face Hub names ("org/name") resolved through the local HF cache, offline.

`resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")` returns the cached snapshot folder that transformers'
`from_pretrained` would read with `local_files_only=True`; nothing is downloaded. A string naming an existing
file or folder is returned as that path, so every caller can pass either.

The cache is found the way huggingface_hub finds it: `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`,
else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. Its layout:

    <cache>/models--<org>--<name>/refs/<revision>           the commit hash a branch or tag points at
    <cache>/models--<org>--<name>/snapshots/<commit>/...    the files of that commit (symlinks into blobs/)

huggingface_hub is not needed (it ships with transformers, a dev extra only); this module reads the layout
itself and the tests check it against `huggingface_hub.snapshot_download(..., local_files_only=True)`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from jaxkn.convert.mapping import CheckpointError

# huggingface_hub's own rules (validate_repo_id): an optional namespace, word characters, '-' and '.', no '--'
# or '..' (the cache folder joins the parts with '--').
_REPO_ID = re.compile(r"^(?:[\w\-.]+/)?[\w\-.]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_MAX_REPO_ID = 96


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A model name is neither an existing path nor a model in the local Hugging Face cache."""


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache folder, from the same environment variables as huggingface_hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return _expand(os.environ[var])
    if os.environ.get("HF_HOME"):
        return _expand(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return _expand(xdg) / "huggingface" / "hub"


def _expand(text: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(text)))


def is_repo_id(text: str) -> bool:
    """Whether `text` is spelled like a Hub model id ("org/name" or "name")."""
    return (len(text) <= _MAX_REPO_ID and bool(_REPO_ID.match(text)) and "--" not in text and ".." not in text
            and not text.startswith((".", "-")))


def repo_cache_folder(repo_id: str, cache_dir: str | Path | None = None) -> Path:
    """`<cache>/models--<org>--<name>`, the folder the cache keeps one model repository in."""
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    return cache / "--".join(["models", *repo_id.split("/")])


def resolve_model(name_or_path: str | Path, *, revision: str = "main", cache_dir: str | Path | None = None) -> Path:
    """The local path of a model given as a path or as a Hub name in the local HF cache (never downloads).

    Args:
      name_or_path: an existing file or folder (returned as is), or a Hub model id such as "org/name".
      revision: a branch or tag recorded under `refs/`, or a 40-hex commit hash (default "main").
      cache_dir: the Hub cache to search (default: `hub_cache_dir()`).

    Returns:
      The path, or the cached snapshot folder of that revision; a snapshot holding a single `.gguf` file and no
      config.json resolves to that file (GGUF repositories are usually one file).

    Raises:
      ModelNotFoundError: naming the path and the cache folder searched, and how to get the model there.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = str(name_or_path)
    if not is_repo_id(text):
        raise ModelNotFoundError(f"{text} does not exist (and is not a Hugging Face model id like 'org/name')")
    folder = repo_cache_folder(text, cache_dir)
    snapshot = _snapshot(folder, revision)
    if snapshot is None:
        raise ModelNotFoundError(
            f"{text!r} is not a local path, and the Hugging Face cache has no revision {revision!r} of it: searched "
            f"{folder} (the cache is HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub). Download it "
            f"once with `huggingface-cli download {text}` (or transformers' from_pretrained), point HF_HUB_CACHE "
            f"or HF_HOME at the cache that holds it, or pass the model's folder or .gguf file instead")
    return _model_file(snapshot)


def _snapshot(folder: Path, revision: str) -> Path | None:
    """snapshots/<commit> for a commit hash or for the commit `refs/<revision>` names; None if absent."""
    commit = revision if _COMMIT.match(revision) else None
    ref = folder / "refs" / revision
    if commit is None and ref.is_file():
        commit = ref.read_text().strip()
    if commit is None:
        return None
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _model_file(snapshot: Path) -> Path:
    if (snapshot / "config.json").is_file():
        return snapshot
    ggufs = sorted(snapshot.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs)
        raise ModelNotFoundError(f"the cached snapshot {snapshot} holds several .gguf files ({names}): pass the "
                                 f"path of the one to load")
    return snapshot  # the loader says what is missing from it


__all__ = ["ModelNotFoundError", "hub_cache_dir", "is_repo_id", "repo_cache_folder", "resolve_model"]
