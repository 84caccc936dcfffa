"""The two-hop study's multi-host path through its real CLI: two local processes joined by `jax.distributed`
(gloo on CPU, coordinator on 127.0.0.1), each with a 2x1 mesh over its own two CPU devices, against one process
running the same command without --distributed.

Each host gets its own --out (separate disks, as on real hosts): each studies its block of the selected items,
the results are gathered once and process 0 alone writes the aggregate. Checked: both exit 0 in time; only
process 0 has report.md / summary.json / items.csv; every item is there exactly once; per-item results, the
knowledge neurons of every fact and the summary's numbers equal the single-process run's (floats to relative
1e-5, METHOD.md §9; everything else exactly).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_experiment import _dataset_the_model_knows
from test_experiment_mesh import TINY, _assert_same, _files

REPO = Path(__file__).resolve().parents[1]
AGGREGATE = ("report.md", "summary.json", "items.csv")
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(argv: list[str], out: Path, **env) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu", **env)
    return subprocess.Popen([sys.executable, "-m", "jaxkn.experiments.two_hop", *argv, "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("experiment_distributed")
    data = _dataset_the_model_knows(tiny_checkpoint, tmp)
    # --limit 3 (after TINY's 2: the last wins) splits unevenly over two hosts when three items pass
    argv = ["--model", str(tiny_checkpoint), "--dataset", str(data), *TINY, "--limit", "3", "--mesh", "2x1"]
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = {"single": _launch(argv, tmp / "single")}
    for i in range(2):
        procs[f"host{i}"] = _launch([*argv, "--distributed"], tmp / f"host{i}", JAX_COORDINATOR_ADDRESS=coordinator,
                                    JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
    logs = {}
    try:
        for name, proc in procs.items():
            logs[name] = (proc.communicate(timeout=TIMEOUT_S)[0], proc.returncode)
    finally:
        for proc in procs.values():  # only ours, by handle: a hung peer must not outlive the test
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, (log, rc) in logs.items():
        assert rc == 0, f"{name} exited {rc}:\n{log[-6000:]}"
    return tmp


def test_only_process_0_writes_the_aggregate(runs):
    for name in AGGREGATE:
        assert (runs / "host0" / name).stat().st_size > 0, name
        assert not (runs / "host1" / name).exists(), name


def test_every_item_exactly_once(runs):
    ref = json.loads((runs / "single" / "summary.json").read_text())
    got = json.loads((runs / "host0" / "summary.json").read_text())
    n = ref["numbers"]["n_items"]
    assert n >= 2 and got["numbers"]["n_items"] == got["filter"]["studied"] == n
    table = pd.read_csv(runs / "host0" / "items.csv")
    ids = list(map(str, table["case_id"]))
    assert len(ids) == len(set(ids)) == n
    ref_ids = sorted(map(str, pd.read_csv(runs / "single" / "items.csv")["case_id"]))
    files = sorted(Path(name).stem for name in _files(runs / "host0", "items"))
    assert sorted(ids) == ref_ids == files
    # host 1 computed only its own block (the smaller one: n // 2 items), all of them among the merged ones
    own = _files(runs / "host1", "items")
    assert len(own) == n // 2 and own.keys() <= _files(runs / "host0", "items").keys()


def test_results_equal_one_process(runs):
    ref_items, got_items = _files(runs / "single", "items"), _files(runs / "host0", "items")
    assert got_items.keys() == ref_items.keys()
    first = next(iter(ref_items.values()))
    assert {"none", "zero_shot"} <= first["cot"].keys() and "base" in first["interventions"]
    for name, ref in ref_items.items():
        _assert_same(got_items[name], ref, f"items/{name}")
    for name, got in _files(runs / "host1", "items").items():
        _assert_same(got, ref_items[name], f"host1/items/{name}")
    ref_facts = _files(runs / "single", "facts")
    assert any(f["refined"] for f in ref_facts.values())
    got_facts = _files(runs / "host0", "facts")
    assert got_facts.keys() == ref_facts.keys()
    for name, ref in ref_facts.items():
        _assert_same(got_facts[name], ref, f"facts/{name}")
    ref, got = (json.loads((runs / r / "summary.json").read_text()) for r in ("single", "host0"))
    for key in ("numbers", "facts", "filter"):
        _assert_same(got[key], ref[key], f"summary/{key}")
