"""Multi-host runs: start `jax.distributed`, give each host its share of a dataset, gather results once.

The pattern for an experiment over N items on P hosts (processes):

    initialize()                                     # every host; no arguments on TPU pods / SLURM / GKE
    mine = shard_items(items)                        # host p gets a contiguous block; blocks cover every item once
    results = [run_one(item) for item in mine]       # on this host's devices (a mesh over jax.local_devices())
    everything = gather_results(results, len(items)) # same list, in item order, on every host
    write_once(path, everything)                     # only process 0 writes; the others wait for it

Results are any JSON-serialisable values. They travel as UTF-8 JSON bytes through `process_allgather`, JAX's
own collective (gloo on CPU, the interconnect on TPU/GPU), so nothing but JAX is needed. Because the blocks are
contiguous and gathered in process order, concatenation restores item order; `gather_results` checks that the
count matches the dataset, so an item lost or run twice fails loudly instead of skewing a statistic.

A model too large for one host instead uses one global mesh (`jaxkn.sharding.make_mesh` over `jax.devices()`),
with every host running the same program on its rows: see `global_batch`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxkn.sharding import batch_sharding, to_host  # noqa: F401 (to_host is re-exported)


class DistributedError(RuntimeError):
    """Hosts disagree about the work (lost or duplicated items, a bad process index)."""


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None) -> None:
    """Starts `jax.distributed` once (idempotent); a single process without arguments is left alone.

    On TPU pods, SLURM and GKE every argument is detected from the environment: call `initialize()` on every
    host. Elsewhere pass the coordinator ("host:port" of process 0), the process count and this process's id,
    or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (read here when an argument is None).
    On CPU, cross-process collectives use gloo.
    """
    if jax.distributed.is_initialized():
        return
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator_address is None and num_processes is None and not _cluster_detected():
        return  # one process, nothing to coordinate
    # Only the CPU client reads this (accelerators use their own interconnect): harmless everywhere.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids)


def _cluster_detected() -> bool:
    markers = ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "SLURM_JOB_ID", "MEGASCALE_COORDINATOR_ADDRESS",
               "JAX_COORDINATOR_ADDRESS")
    return any(os.environ.get(m) for m in markers)


def host_block(n_items: int, process_index: int | None = None, process_count: int | None = None) -> slice:
    """The contiguous block of item indices host `process_index` owns (sizes differ by at most one)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if count < 1 or not 0 <= index < count:
        raise DistributedError(f"process_index {index} is not in [0, {count})")
    if n_items < 0:
        raise DistributedError(f"n_items must be >= 0, got {n_items}")
    base, extra = divmod(n_items, count)
    start = index * base + min(index, extra)
    return slice(start, start + base + (index < extra))


def shard_items(items: Sequence[Any], process_index: int | None = None, process_count: int | None = None) -> list:
    """This host's share of a dataset: a contiguous block; the blocks of all hosts partition `items` in order."""
    return list(items[host_block(len(items), process_index, process_count)])


def _allgather_bytes(payload: bytes) -> list[bytes]:
    """Every process's bytes, in process order (two collectives: lengths, then padded payloads)."""
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return [payload]
    lengths = np.asarray(multihost_utils.process_allgather(np.asarray([len(payload)], np.int64))).reshape(-1)
    buffer = np.zeros(int(lengths.max()), np.uint8)
    buffer[: len(payload)] = np.frombuffer(payload, np.uint8)
    gathered = np.asarray(multihost_utils.process_allgather(buffer)).reshape(len(lengths), -1)
    return [gathered[i, : lengths[i]].tobytes() for i in range(len(lengths))]


def gather_results(local: Sequence[Any], n_items: int) -> list:
    """All hosts' results (JSON-serialisable values), concatenated in process order = item order.

    Args:
      local: this host's results, one per item of `shard_items(items)`, in that order.
      n_items: the dataset's length; each host must hold exactly its block's count.
    Returns:
      the `n_items` results on every host.
    """
    block = host_block(n_items)
    if len(local) != block.stop - block.start:
        raise DistributedError(f"process {jax.process_index()} has {len(local)} results for its "
                               f"{block.stop - block.start} items [{block.start}, {block.stop}): one result per item")
    parts = [json.loads(b.decode()) for b in _allgather_bytes(json.dumps(list(local)).encode())]
    for index, part in enumerate(parts):
        want = host_block(n_items, index, len(parts))
        if len(part) != want.stop - want.start:
            raise DistributedError(f"process {index} sent {len(part)} results for {want.stop - want.start} items")
    return [r for part in parts for r in part]


def check_unique(results: Sequence[dict], key: str) -> None:
    """Raises when two results share `key` (an item run twice) and names the duplicates."""
    seen, duplicates = set(), set()
    for r in results:
        (duplicates if r[key] in seen else seen).add(r[key])
    if duplicates:
        raise DistributedError(f"items processed more than once ({key}): {sorted(map(str, duplicates))[:10]}")


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (a no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def write_once(path: str | Path, obj: Any) -> Path | None:
    """Process 0 writes `obj` as JSON (atomically); every process returns after the file exists."""
    path = Path(path)
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=1))
        tmp.replace(path)
    barrier(f"jaxkn.write_once:{path}")
    return path if jax.process_index() == 0 else None


def global_batch(local_rows: Any, mesh) -> Any:
    """A global array from this host's rows (a pytree of [b, ...] arrays), split over the mesh's "data" axis.

    Each host passes the rows its devices hold along "data"; with one process this equals
    `jax.device_put(rows, batch_sharding(mesh))`. Every host must pass the same number of rows.
    """
    sharding = batch_sharding(mesh)
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)),
                                  local_rows)


__all__ = [
    "DistributedError", "initialize", "host_block", "shard_items", "gather_results", "check_unique", "barrier",
    "write_once", "global_batch", "to_host",
]
