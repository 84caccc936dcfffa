"""Scale-out with JAX's own engine: a named 2-D mesh, sharding rules for the params, and batch sharding.

The mesh has two named axes:
  "data"   prompts / facts: the batch axis B of every input is split over it;
  "model"  parameters: each weight is replicated or split over it, by one option, the `rule`:

  "replicated"  every device holds every weight (pure data parallelism).
  "fsdp"        each weight's largest non-layer axis is split over "model" (the leading L axis is never split,
                so the layer scan keeps its shape); XLA gathers a layer's weights where they are used.
  "tensor"      Megatron-style tensor parallelism for the LLaMA family: wq/wk/wv/w_gate/w_up are split on their
                output axis (heads, neurons), wo/w_down on their input axis, embed/lm_head on the vocabulary;
                norms are replicated. Query heads and d_ff must divide by the "model" size. When the key/value
                heads do not (GQA with few KV heads), wk/wv are replicated, as vLLM does, and only the query
                heads are split.

Nothing else changes: the same jitted functions run on sharded inputs and GSPMD propagates the layout, so
results equal one device's up to the order of float sums (METHOD.md §9: ~5e-6 relative in float32 for tensor
parallelism). Sizes must divide: a batch is padded to a multiple of the "data" size by repeating its last row,
and the padding rows are dropped from the results (`shard_batch` returns the real row count).

Specs are computed from `param_shapes(cfg)`, so they also serve abstract arrays (orbax restore into a sharded
layout, memory analysis of 70B shapes) without allocating anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxkn.config import ModelConfig
from jaxkn.model import Params, param_shapes

AXES = ("data", "model")
RULES = ("replicated", "fsdp", "tensor")

# Megatron roles of the tensor rule: which axis of each weight (after the layer axis) is split over "model".
_COLUMN = ("wq", "wk", "wv", "w_gate", "w_up")  # output axis split: each device computes some heads / neurons
_ROW = ("wo", "w_down")  # input axis split: partial sums, reduced across "model"


class ShardingError(ValueError):
    """A mesh or sharding rule that cannot hold this model or batch."""


def make_mesh(data: int = 1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "model") mesh of `data * model` devices (default: the first ones of `jax.devices()`).

    Axis types are Auto (GSPMD propagation), the classic behaviour, not jax 0.10's explicit default.
    """
    if data < 1 or model < 1:
        raise ShardingError(f"mesh sizes must be positive, got data={data}, model={model}")
    devices = list(jax.devices() if devices is None else devices)
    if data * model > len(devices):
        raise ShardingError(
            f"a {data}x{model} mesh needs {data * model} devices but only {len(devices)} are visible; on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={data * model} before jax starts")
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), AXES, axis_types=auto, devices=devices[: data * model])


def parse_mesh(text: str) -> tuple[int, int]:
    """'4x2' -> (data=4, model=2), the form command lines take."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ShardingError(f"mesh {text!r} is not of the form DATAxMODEL, e.g. '4x2'")
    return int(parts[0]), int(parts[1])


# ---- parameter rules ---------------------------------------------------------------------------------------

def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ShardingError(f"unknown sharding rule {rule!r}; choose one of {RULES}")


def _spec_on(ndim: int, axis: int | None) -> PartitionSpec:
    if axis is None:
        return PartitionSpec()
    return PartitionSpec(*[("model" if i == axis else None) for i in range(ndim)])


def _fsdp_axis(shape: tuple[int, ...], first: int, n_model: int) -> int | None:
    """The largest axis at or after `first` that divides by the model size (None: replicate this leaf)."""
    candidates = [i for i in range(first, len(shape)) if shape[i] % n_model == 0]
    return max(candidates, key=lambda i: (shape[i], -i)) if candidates else None


def _tensor_axis(name: str, shape: tuple[int, ...], cfg: ModelConfig, n_model: int) -> int | None:
    if name in ("wk", "wv") and cfg.n_kv_heads % n_model:
        return None  # GQA with fewer KV heads than model shards: replicate K/V (each device needs all of them)
    if name in _COLUMN:
        return len(shape) - 1
    if name in _ROW:
        return 1
    if name == "embed":
        return 0
    if name == "lm_head":
        return 1
    return None  # norms: tiny, replicated


def _check_tensor(cfg: ModelConfig, n_model: int) -> None:
    problems = [f"{what}={n} is not a multiple of the model axis size {n_model}"
                for what, n in (("n_heads", cfg.n_heads), ("d_ff", cfg.d_ff), ("vocab_size", cfg.vocab_size))
                if n % n_model]
    if problems:
        raise ShardingError(
            "the 'tensor' rule cannot split this model: " + "; ".join(problems)
            + ". Use a model axis size that divides them, or the 'fsdp' or 'replicated' rule.")


def param_specs(cfg: ModelConfig, rule: str, n_model: int) -> dict:
    """The params pytree with a `PartitionSpec` per leaf, for a "model" axis of size `n_model`."""
    _check_rule(rule)
    if rule == "tensor" and n_model > 1:
        _check_tensor(cfg, n_model)

    def leaf_spec(path, shape):
        name = str(getattr(path[-1], "key", ""))
        if rule == "replicated" or n_model == 1:
            return PartitionSpec()
        if rule == "fsdp":
            stacked = str(getattr(path[0], "key", "")) == "layers"
            return _spec_on(len(shape), _fsdp_axis(shape, 1 if stacked else 0, n_model))
        return _spec_on(len(shape), _tensor_axis(name, shape, cfg, n_model))

    return jax.tree_util.tree_map_with_path(leaf_spec, param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple))


def param_shardings(cfg: ModelConfig, mesh: Mesh, rule: str = "replicated") -> dict:
    """The params pytree with a `NamedSharding` per leaf (also the `shardings=` of `restore_params`)."""
    specs = param_specs(cfg, rule, mesh.shape["model"])
    return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs,
                                  is_leaf=lambda s: isinstance(s, PartitionSpec))


def shard_params(params: Params, cfg: ModelConfig, mesh: Mesh, rule: str = "replicated") -> Params:
    """Places `params` on `mesh` under `rule` (see the module docstring); values are unchanged."""
    return jax.device_put(params, param_shardings(cfg, mesh, rule))


def on_mesh(params: Params, mesh: Mesh) -> bool:
    """Whether every leaf of `params` already lives on `mesh` (placed by `shard_params`)."""
    leaves = jax.tree_util.tree_leaves(params)
    return bool(leaves) and all(isinstance(a, jax.Array) and isinstance(a.sharding, NamedSharding)
                                and a.sharding.mesh == mesh for a in leaves)


def place_params(params: Params, cfg: ModelConfig, mesh: Mesh, rule: str | None = None) -> Params:
    """`params` on `mesh`: under `rule` when one is given; else as they are if already there (any rule),
    otherwise replicated. What the `mesh=` keyword of attribution and sweeps uses."""
    if rule is None and on_mesh(params, mesh):
        return params
    return shard_params(params, cfg, mesh, rule or "replicated")


def abstract_params(cfg: ModelConfig, mesh: Mesh, rule: str = "replicated", dtype: Any = None) -> dict:
    """`jax.ShapeDtypeStruct`s of the params with their shardings: for lowering or restoring, nothing allocated."""
    dtype = np.dtype(jax.numpy.dtype(dtype or cfg.param_dtype))
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s, dtype, sharding=sh),
                                  param_shapes(cfg), param_shardings(cfg, mesh, rule),
                                  is_leaf=lambda s: isinstance(s, tuple))


# ---- batches -----------------------------------------------------------------------------------------------

def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Splits the leading (batch) axis of an array over "data"; other axes are replicated."""
    return NamedSharding(mesh, PartitionSpec("data"))


def pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
    """Pads axis 0 up to a multiple by repeating the last row (real inputs, so padding rows compute safely)."""
    x = np.asarray(x)
    extra = -x.shape[0] % multiple
    if not extra:
        return x
    return np.concatenate([x, np.repeat(x[-1:], extra, axis=0)], axis=0)


def shard_batch(batch: Any, mesh: Mesh) -> tuple[Any, int]:
    """Places a pytree of [B, ...] arrays with rows split over "data"; returns (sharded batch, B).

    Rows are padded to a multiple of the "data" size; drop them from results with `unpad(result, B)`.
    """
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ShardingError("shard_batch got an empty batch")
    sizes = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ShardingError(f"every batch array needs the same leading batch axis; got sizes {sorted(map(str, sizes))}")
    n_rows = sizes.pop()
    if n_rows == 0:
        raise ShardingError("shard_batch got a batch of 0 rows")
    n_data = mesh.shape["data"]
    padded = jax.tree_util.tree_map(lambda a: pad_rows(a, n_data), batch)
    return jax.device_put(padded, batch_sharding(mesh)), n_rows


def unpad(result: Any, n_rows: int) -> Any:
    """Drops the padding rows `shard_batch` added (leading axis) and brings results to the host as numpy
    (gathering shards other processes hold when the mesh spans hosts)."""
    return jax.tree_util.tree_map(lambda a: (to_host(a) if isinstance(a, jax.Array) else np.asarray(a))[:n_rows],
                                  result)


def to_host(array: jax.Array) -> np.ndarray:
    """The whole global array as numpy on every host (gathers shards held by other processes)."""
    if array.is_fully_addressable:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def run_sharded(fn, params: Params, batch: Any, *args, mesh: Mesh, **kwargs) -> Any:
    """`fn(params, batch, *args, **kwargs)` with the batch's rows split over "data", padding rows dropped.

    `params` should already be placed (`shard_params`, once); `fn` is any jitted function of a [B, ...] pytree
    whose outputs lead with B too (e.g. `jaxkn.attribution.attribute_batch`, `jaxkn.model.forward`).
    """
    sharded, n_rows = shard_batch(batch, mesh)
    return unpad(fn(params, sharded, *args, **kwargs), n_rows)


def describe_placement(array: jax.Array) -> list[tuple[int, tuple]]:
    """(device id, index into the global array) for every shard: what tests and logs check placement with."""
    def bounds(index):
        return tuple(sl.indices(n)[:2] for sl, n in zip(index, array.shape))

    return sorted((s.device.id, bounds(s.index)) for s in array.addressable_shards)


__all__ = [
    "AXES", "RULES", "ShardingError", "make_mesh", "parse_mesh", "param_specs", "param_shardings", "shard_params",
    "on_mesh", "place_params", "abstract_params", "batch_sharding", "pad_rows", "shard_batch", "unpad", "run_sharded",
    "describe_placement", "to_host",
]
