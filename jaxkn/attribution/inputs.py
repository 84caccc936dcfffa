"""Attribution inputs: teacher-forced (prompt, answer) rows padded into one batch (METHOD.md §2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from jaxkn.attribution.config import AttributionInputError
from jaxkn.config import ModelConfig
from jaxkn.model import check_context
from jaxkn.runtime import bucket_length


class AttributionBatch(NamedTuple):
    """Right-padded teacher-forced rows: prompt + y_1..y_{K-1}; y_k is read at answer_positions[:, k-1]."""

    tokens: Int[Array, "B T"]
    valid: Bool[Array, "B T"]
    answer_positions: Int[Array, "B A"]
    answer_tokens: Int[Array, "B A"]
    answer_mask: Bool[Array, "B A"]


def make_batch(cfg: ModelConfig, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
               *, bucket: bool = True) -> AttributionBatch:
    """Pads token-id prompts and answers into one batch (lengths bucketed so compiled shapes repeat)."""
    prompts, answers = [list(map(int, p)) for p in prompts], [list(map(int, a)) for a in answers]
    if not prompts:
        raise AttributionInputError("no prompts given: pass at least one (prompt, answer) pair")
    if len(prompts) != len(answers):
        raise AttributionInputError(f"{len(prompts)} prompts but {len(answers)} answers: give one answer per prompt")
    for i, (p, a) in enumerate(zip(prompts, answers)):
        if not p:
            raise AttributionInputError(f"prompt {i} has no tokens")
        if not a:
            raise AttributionInputError(f"answer {i} has no tokens: an answer must tokenize to at least one token")
        bad = [t for t in p + a if not 0 <= t < cfg.vocab_size]
        if bad:
            raise AttributionInputError(f"pair {i} has token ids {bad[:5]} outside the vocabulary [0, {cfg.vocab_size})")
        check_context(cfg, len(p) + len(a) - 1)
    rows = [p + a[:-1] for p, a in zip(prompts, answers)]
    longest, n_answer = max(map(len, rows)), max(map(len, answers))
    width = min(bucket_length(longest), cfg.max_position_embeddings) if bucket else longest
    tokens = np.zeros((len(rows), width), np.int32)
    valid = np.zeros((len(rows), width), bool)
    positions = np.zeros((len(rows), n_answer), np.int32)
    golds = np.zeros((len(rows), n_answer), np.int32)
    mask = np.zeros((len(rows), n_answer), bool)
    for i, (row, p, a) in enumerate(zip(rows, prompts, answers)):
        tokens[i, :len(row)], valid[i, :len(row)] = row, True
        positions[i, :len(a)] = len(p) - 1 + np.arange(len(a))
        golds[i, :len(a)], mask[i, :len(a)] = a, True
    return AttributionBatch(*map(jnp.asarray, (tokens, valid, positions, golds, mask)))


def answer_token_ids(tokenizer, prompt: str, answer: str, *, separator: str = " ",
                     add_bos: bool | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) per METHOD.md §2: the tokens of prompt + separator + answer after the prompt's
    own when those are a prefix, else the answer tokenized alone with a leading space; never a BOS."""
    if not answer.strip():
        raise AttributionInputError(f"answer {answer!r} is empty: it tokenizes to no token")
    prompt_ids = list(tokenizer.encode(prompt, add_bos=add_bos))
    sep = "" if (answer[:1].isspace() or prompt[-1:].isspace()) else separator
    full = list(tokenizer.encode(prompt + sep + answer, add_bos=add_bos))
    if full[:len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
        ids = full[len(prompt_ids):]
    else:
        ids = list(tokenizer.encode(" " + answer.lstrip(), add_bos=False))
    bos = getattr(tokenizer, "bos_id", None)
    ids = [t for t in ids if bos is None or t != bos]
    if not ids:
        raise AttributionInputError(f"answer {answer!r} tokenizes to no token")
    return prompt_ids, ids
