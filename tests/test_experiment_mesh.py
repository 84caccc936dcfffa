"""The two-hop study on device meshes: per-item results (and each fact's knowledge neurons) on meshes 8x1, 4x2
and 2x4 equal one device's.

The study runs for real (filter, knowledge neurons, CoT reads, interventions, conflict) on the tiny random LLaMA
checkpoint of `test_experiment`, over items whose answers are its own, with tiny settings. 8 CPU devices exist
only if XLA_FLAGS is set before jax starts, so the four runs happen in one subprocess (this file run as a script:
`python tests/test_experiment_mesh.py CHECKPOINT DATASET OUT_DIR`). Each mesh uses another sharding rule, so
all three are covered: 8x1 replicated, 4x2 fsdp, 2x4 tensor. Floats agree to relative error 1e-5 (METHOD.md §9,
float32); booleans, strings, neuron sets and counts are identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_experiment import _dataset_the_model_knows

RTOL = 1e-5
ATOL = 1e-7  # floats that are ~0 (a probability or score that cancels) are compared absolutely
RUNS = {"1": None, "8x1": "replicated", "4x2": "fsdp", "2x4": "tensor"}
TINY = ["--limit", "2", "--queries-per-hop", "2", "--steps", "2", "--tolerance", "none", "--matched-draws", "10",
        "--cot-tokens", "6", "--answer-tokens", "4",
        "--bootstrap", "20", "--batch-size", "2", "--cot", "none,zero_shot"]


def _worker(checkpoint: str, dataset: str, out_dir: Path) -> None:
    import jax

    from jaxkn.experiments import two_hop

    assert len(jax.devices()) == 8, jax.devices()
    for name, rule in RUNS.items():
        mesh = [] if rule is None else ["--mesh", name, "--sharding", rule]
        argv = ["--model", checkpoint, "--dataset", dataset, "--out", str(out_dir / name), *TINY, *mesh]
        assert two_hop.main(argv) == 0, name


@pytest.fixture(scope="module")
def mesh_runs(tiny_checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("experiment_mesh")
    data = _dataset_the_model_knows(tiny_checkpoint, tmp)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, str(tiny_checkpoint), str(data), str(tmp)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"8-device worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return tmp


def _files(out: Path, folder: str) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / folder).glob("*.json"))}


def _assert_same(got, ref, path):
    if isinstance(ref, dict):
        assert got.keys() == ref.keys(), path
        for k in ref:
            _assert_same(got[k], ref[k], f"{path}/{k}")
    elif isinstance(ref, list):
        assert len(got) == len(ref), path
        for i, (g, r) in enumerate(zip(got, ref)):
            _assert_same(g, r, f"{path}[{i}]")
    elif isinstance(ref, float) and not isinstance(got, bool):
        assert isinstance(got, (float, int)), (path, got, ref)
        assert abs(got - ref) <= RTOL * abs(ref) + ATOL, (path, got, ref, abs(got - ref) / max(abs(ref), 1e-30))
    else:
        assert type(got) is type(ref) and got == ref, (path, got, ref)


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["8x1", "4x2", "2x4"])
def test_per_item_results_equal_one_device(mesh_runs, mesh):
    ref_items, got_items = _files(mesh_runs / "1", "items"), _files(mesh_runs / mesh, "items")
    assert len(ref_items) >= 1 and got_items.keys() == ref_items.keys()
    # every stage ran: KN reads under both CoT settings, interventions, conflict
    first = next(iter(ref_items.values()))
    assert {"none", "zero_shot"} <= first["cot"].keys() and "base" in first["interventions"]
    for name, ref in ref_items.items():
        _assert_same(got_items[name], ref, f"{mesh}/items/{name}")
    ref_facts, got_facts = _files(mesh_runs / "1", "facts"), _files(mesh_runs / mesh, "facts")
    assert len(ref_facts) >= 2 and got_facts.keys() == ref_facts.keys()
    assert any(f["refined"] for f in ref_facts.values())  # knowledge neurons were found, not empty sets compared
    for name, ref in ref_facts.items():
        _assert_same(got_facts[name], ref, f"{mesh}/facts/{name}")


@pytest.mark.slow
def test_mesh_and_rule_are_recorded_outside_the_fingerprint(mesh_runs):
    runs = {name: json.loads((mesh_runs / name / "summary.json").read_text()) for name in RUNS}
    for name, rule in RUNS.items():
        settings = runs[name]["settings"]
        assert settings["mesh"] == (None if rule is None else name)
        assert settings["sharding"] == (rule or "fsdp")
    prints = {json.loads((mesh_runs / name / "run.json").read_text())["fingerprint"] for name in RUNS}
    assert len(prints) == 1  # a run may be resumed on another mesh
    ref = runs["1"]["numbers"]["n_items"]
    assert all(r["numbers"]["n_items"] == ref for r in runs.values())


def test_bad_sharding_option_is_named():
    from jaxkn.experiments import two_hop
    from jaxkn.experiments.settings import StudyConfig

    with pytest.raises(ValueError, match="sharding.*is not one of"):
        StudyConfig(sharding="zero3")
    with pytest.raises(ValueError, match="sharding.*is not one of"):  # checked where every setting is
        two_hop.settings_from_args(two_hop.parser().parse_args(["--sharding", "zero3"]))
    args = two_hop.parser().parse_args(["--mesh", "1x2"])
    settings = two_hop.settings_from_args(args)
    assert settings.mesh == "1x2" and settings.sharding == "fsdp"  # the default fits any model (SmolLM2's 9 heads)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
