"""Bounded memory over integration points (METHOD.md §8): evaluate the points in chunks.

Every point of every attributed layer is one row that runs to the LM head; its full-vocabulary logits and the
activations its backward pass needs scale with the number of points. Rows are independent, so evaluating
the points a chunk at a time (a `lax.map`, one chunk's rows live at once) gives the same numbers with a peak
set by the chunk, not by the budget of converged mode.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxkn.config import ModelConfig

# Bytes of per-point row state allowed at once when `point_chunk` is None: far below any accelerator's memory
# with the weights resident, and large enough that the default fixed rules (21 points) stay one chunk on the
# tiny and SmolLM2-sized batches the tests and the study run.
AUTO_CHUNK_BYTES = 4 * 2**30


def row_bytes(cfg: ModelConfig, itemsize: int) -> int:
    """Bytes one row keeps for its backward pass: per layer the residual, attention and MLP intermediates,
    plus its vocabulary logits in float32 (a rough upper bound; the compiled program may keep less)."""
    per_layer = 4 * cfg.d_model + cfg.n_heads * cfg.head_dim + 3 * cfg.d_ff
    return cfg.n_layers * per_layer * itemsize + 2 * cfg.vocab_size * 4


def auto_point_chunk(cfg: ModelConfig, rows_per_point: int, n_points: int, itemsize: int,
                     budget: int = AUTO_CHUNK_BYTES) -> int:
    """Points per chunk so that rows_per_point * chunk rows fit `budget` (at least 1, at most n_points)."""
    fit = budget // max(1, rows_per_point * row_bytes(cfg, itemsize))
    return int(min(n_points, max(1, fit)))


def map_point_chunks(fn, nodes: Float[Array, "... M"], chunk: int):
    """`fn(nodes)` evaluated `chunk` points at a time.

    `fn` maps nodes [..., m] to a pytree of arrays whose axis `nodes.ndim - 1` is the point axis (m long).
    The points are padded to a whole number of chunks with t = 0 (dropped again), the chunks run in a
    `lax.map`, and the outputs are stitched back in order. One chunk: `fn` itself, no map.
    """
    n_points, axis = nodes.shape[-1], nodes.ndim - 1
    n_chunks = math.ceil(n_points / chunk)
    if n_chunks <= 1:
        return fn(nodes)
    chunk = math.ceil(n_points / n_chunks)  # even chunks: at most n_chunks - 1 padded points
    padded = jnp.concatenate([nodes, jnp.zeros((*nodes.shape[:-1], n_chunks * chunk - n_points), nodes.dtype)], -1)
    stacked = jnp.moveaxis(padded.reshape(*nodes.shape[:-1], n_chunks, chunk), -2, 0)  # [C, ..., c]
    out = jax.lax.map(fn, stacked)

    def join(x):  # [C, ..., c, ...] -> [..., C*c, ...], padding dropped
        x = jnp.moveaxis(x, 0, axis)
        x = x.reshape(*x.shape[:axis], n_chunks * chunk, *x.shape[axis + 2:])
        return jax.lax.slice_in_dim(x, 0, n_points, axis=axis)

    return jax.tree_util.tree_map(join, out)


__all__ = ["AUTO_CHUNK_BYTES", "row_bytes", "auto_point_chunk", "map_point_chunks"]
