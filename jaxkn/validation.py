"""Checks of user input at the library's public entry points, done once, before any compiled work.

- `check_token_ids(ids, vocab_size, where=...)`: every id in [0, vocab). XLA does not check gathers: a negative
  id reads the embedding row vocab - k and an id >= vocab reads NaN, so a wrong tokenizer or an off-by-one
  gives plausible-looking garbage instead of an error. Only concrete inputs (lists, numpy, jax arrays outside a
  transform) are checked; tracers pass through, so `jit`/`vmap`/`grad` users pay nothing.
- `check_tokenizer_fits(tokenizer, cfg, where=...)`: the tokenizer's largest id must be a row of the model's
  embedding table (a 64-token model loaded with a 49k tokenizer is refused at load, not run).
- `read_json_file(path, what=...)`: JSON with an error naming the file, line and column; `check_json_files`
  does that for a model folder's config.json / tokenizer files before other libraries read them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxkn.errors import JSONFileError, UserInputError

MAX_LISTED = 5  # bad rows (and ids per row) quoted in a message; the count says how many more
HF_JSON_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json")


class TokenIdError(UserInputError):
    """Token ids outside the model's vocabulary, or not integers; names the entry point, the rows and the ids."""


def _is_traced(ids) -> bool:
    if isinstance(ids, jax.core.Tracer):
        return True
    if isinstance(ids, (list, tuple)):
        return any(_is_traced(x) for x in ids)
    return False


def _rows(ids, where: str) -> list[np.ndarray]:
    """The ids as a list of 1-d integer rows (ragged lists of prompts stay ragged)."""
    if isinstance(ids, (list, tuple)) and ids and all(isinstance(r, (list, tuple, np.ndarray, jax.Array))
                                                      for r in ids):
        return [np.asarray(r).reshape(-1) for r in ids]
    try:
        arr = np.asarray(ids)
    except ValueError as e:  # a mix of rows and scalars
        raise TokenIdError(f"{where}: expected a row or a batch of rows of token ids, got a mix of rows and "
                           f"single ids ({e})") from e
    if arr.ndim <= 1:
        return [arr.reshape(-1)]
    return list(arr.reshape(-1, arr.shape[-1]))


def _bad_rows(rows: list[np.ndarray], vocab_size: int, where: str) -> list[tuple[int, list]]:
    bad = []
    for r, row in enumerate(rows):
        if row.size == 0:
            continue
        if row.dtype == bool or not np.issubdtype(row.dtype, np.integer):
            raise TokenIdError(f"{where}: token ids must be integers, row {r} holds {row.dtype} values "
                               f"{row.tolist()[:MAX_LISTED]}")
        out = (row < 0) | (row >= vocab_size)
        if out.any():
            bad.append((r, sorted(set(row[out].tolist()))))
    return bad


def check_token_ids(ids, vocab_size: int, *, where: str) -> None:
    """Raises `TokenIdError` when any id is outside [0, vocab_size); skipped for traced values.

    Args:
      ids: token ids: an int, a row, a batch [B, T] (list, numpy or jax array) or a ragged list of rows.
      vocab_size: the model's vocabulary (`cfg.vocab_size`).
      where: the public entry point, named in the message (e.g. "forward").
    """
    if _is_traced(ids):
        return
    bad = _bad_rows(_rows(ids, where), vocab_size, where)
    if not bad:
        return
    listed = "; ".join(f"row {r}: {v[:MAX_LISTED]}{' ...' if len(v) > MAX_LISTED else ''}"
                       for r, v in bad[:MAX_LISTED])
    more = f" (and {len(bad) - MAX_LISTED} more rows)" if len(bad) > MAX_LISTED else ""
    raise TokenIdError(
        f"{where}: token ids outside the vocabulary [0, {vocab_size}): {listed}{more}. A negative id would read "
        f"embedding row vocab - k and an id >= {vocab_size} gives NaN logits; encode prompts with the tokenizer "
        f"saved with this model, and pad with a real id (e.g. cfg.pad_token_id), not -1")


def max_token_id(tokenizer) -> int:
    """The largest id a `jaxkn.Tokenizer` can produce (added tokens included; -1 for an empty vocabulary)."""
    return max(tokenizer.backend.get_vocab(with_added_tokens=True).values(), default=-1)


def check_tokenizer_fits(tokenizer, cfg, *, where: str | Path) -> None:
    """Raises `TokenIdError` when the tokenizer can produce ids the model has no embedding row for.

    A model may have more rows than its tokenizer has tokens (vocabularies padded to a multiple of 64 are common);
    the other way round every prompt risks NaN logits, and a tokenizer from another model family gives garbage.
    """
    if tokenizer is None:
        return
    top = max_token_id(tokenizer)
    if top >= cfg.vocab_size:
        raise TokenIdError(
            f"{where}: the tokenizer produces ids up to {top} but the model's vocabulary has {cfg.vocab_size} "
            f"entries (config vocab_size): this tokenizer belongs to another model. Put the model's own "
            f"tokenizer.json beside its config (or reconvert the checkpoint from its source)")


def _read_text(path: Path) -> str:
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"  # by content, so a gzip file without .gz is read too
    try:
        if gzipped:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a truncated gzip stream an EOFError
        raise JSONFileError(f"{path}: cannot read this gzip file (truncated or corrupt?): {e}") from e
    except UnicodeDecodeError as e:
        raise JSONFileError(f"{path}: not UTF-8 text (byte {e.start}); expected a JSON file") from e


def json_error(path: Path | str, e: json.JSONDecodeError, line_offset: int = 0) -> JSONFileError:
    """A `JSONFileError` naming the file, the line and column (1-based) and what the parser found there."""
    return JSONFileError(f"{path}: not valid JSON at line {e.lineno + line_offset}, column {e.colno}: {e.msg}")


def read_json_text(path: str | Path, *, what: str = "a JSON file") -> str:
    """The text of a JSON file (gzip detected by content); refuses a missing, empty or non-text file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path} (expected {what})")
    text = _read_text(path)
    if not text.strip():
        raise JSONFileError(f"{path} is empty (expected {what})")
    return text


def read_json_file(path: str | Path, *, what: str = "a JSON file") -> Any:
    """The parsed content of a JSON file, with errors that name the file, line and column."""
    text = read_json_text(path, what=what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise json_error(path, e) from None


def read_json_object(path: str | Path, *, what: str) -> dict[str, Any]:
    """`read_json_file` for files that must hold one JSON object (config.json and the like)."""
    data = read_json_file(path, what=what)
    if not isinstance(data, dict):
        raise JSONFileError(f"{path}: expected {what} (a JSON object), got a JSON {type(data).__name__}")
    return data


def check_json_files(folder: str | Path, names: Sequence[str] = HF_JSON_FILES) -> None:
    """Parses each of `names` present in `folder` as a JSON object, so a broken one is named with its line
    before a library that reads it raises something vaguer (tokenizers: "expected value at line 1")."""
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            read_json_object(path, what=f"a JSON object ({name})")


def check_all_finite(values, *, what: str) -> None:
    """Raises `UserInputError` unless every value is a finite real number (bools refused); skips tracers."""
    if _is_traced(values):
        return
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as e:
        raise UserInputError(f"{what}: expected numbers, got {values!r}") from e
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise UserInputError(f"{what}: expected finite numbers, got {values!r} ({arr.dtype})")
    bad = arr.reshape(-1)[~np.isfinite(arr.reshape(-1).astype(np.float64))]
    if bad.size:
        raise UserInputError(f"{what}: {bad.tolist()[:MAX_LISTED]} is not a finite number (a NaN or inf factor "
                             f"turns every activation it touches, and so the logits, into NaN)")


__all__ = ["TokenIdError", "check_all_finite", "check_json_files", "check_token_ids", "check_tokenizer_fits", "max_token_id",
           "read_json_file", "read_json_object", "read_json_text"]
