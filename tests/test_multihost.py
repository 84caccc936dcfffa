"""Two local processes with `jax.distributed` (gloo on CPU): each runs its share of the items, results are gathered
and written once; one global mesh spans both. Compared with a single-process run of the same items.

The worker is tests/multihost_worker.py; both processes talk over 127.0.0.1 and exit by themselves (timeout).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import multihost_worker as worker  # noqa: E402

TOL = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("multihost")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, worker.__file__, str(i), "2", str(port), str(out_dir)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    logs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=300)
            logs.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:  # only ours, by handle; a hung peer must not outlive the test
            if proc.poll() is None:
                proc.kill()
    for i, (rc, stdout, stderr) in enumerate(logs):
        assert rc == 0, f"process {i} failed:\n{stdout[-2000:]}\n{stderr[-5000:]}"
    return out_dir, [stdout for _, stdout, _ in logs]


def _tagged(stdout: str, tag: str):
    return [json.loads(line[len(tag) + 1:]) for line in stdout.splitlines() if line.startswith(tag + " ")]


@pytest.fixture(scope="module")
def single_process():
    """The same items and batch on this process's one device, no distribution at all."""
    import jax

    from jaxkn.model import forward
    from jaxkn.sharding import make_mesh

    cfg, params = worker.model()
    items = worker.item_results(params, cfg, worker.fake_items(), make_mesh(1, 1))
    logits = jax.jit(lambda p, t: forward(p, t, cfg).logits)(params, worker.global_tokens())
    return items, np.asarray(logits)


def test_each_host_runs_its_own_block(two_hosts):
    _, stdouts = two_hosts
    handled = [_tagged(out, "HANDLED")[0] for out in stdouts]
    assert [len(h) for h in handled] == [4, 3]
    assert handled[0] + handled[1] == [f"case-{i}" for i in range(worker.N_ITEMS)]  # disjoint, complete, in order


def test_results_written_once_without_loss_or_duplicates(two_hosts, single_process):
    out_dir, stdouts = two_hosts
    assert [_tagged(out, "WROTE")[0] is not None for out in stdouts] == [True, False]  # process 0 only
    written = json.loads((out_dir / "items.json").read_text())
    reference, _ = single_process
    assert [r["case_id"] for r in written] == [r["case_id"] for r in reference]
    for got, ref in zip(written, reference):
        assert got["next_token"] == ref["next_token"] and got["top_neuron"] == ref["top_neuron"], got["case_id"]
        rel = np.abs(np.subtract(got["logits"], ref["logits"])).max() / np.abs(ref["logits"]).max()
        assert rel <= TOL, (got["case_id"], rel)


def test_global_mesh_across_hosts_equals_one_device(two_hosts, single_process):
    out_dir, _ = two_hosts
    _, reference = single_process
    got = np.load(out_dir / "global.npy")
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() / np.abs(reference).max() <= TOL


def test_shares_partition_any_dataset():
    from jaxkn.distributed import DistributedError, host_block, shard_items

    for n_items in (0, 1, 5, 16, 4451):
        for count in (1, 2, 3, 8):
            blocks = [host_block(n_items, i, count) for i in range(count)]
            assert sum((list(range(n_items))[b] for b in blocks), []) == list(range(n_items))
            assert max(b.stop - b.start for b in blocks) - min(b.stop - b.start for b in blocks) <= 1
    assert shard_items(list("abcde"), 1, 2) == ["d", "e"]
    with pytest.raises(DistributedError, match="process_index 2 is not in"):
        host_block(5, 2, 2)


def test_gather_rejects_a_wrong_count():
    from jaxkn.distributed import DistributedError, check_unique, gather_results

    assert gather_results([{"a": 1}, {"a": 2}], 2) == [{"a": 1}, {"a": 2}]  # one process: as is
    with pytest.raises(DistributedError, match="has 1 results for its 2 items"):
        gather_results([{"a": 1}], 2)
    with pytest.raises(DistributedError, match="more than once"):
        check_unique([{"id": 1}, {"id": 1}], "id")
