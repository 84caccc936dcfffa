"""Sharded runs equal one device's: forward, generation, attribution, sweeps, and a sharded checkpoint restore.

8 CPU devices exist only if XLA_FLAGS is set before jax starts, so the multi-device work runs once, in a
subprocess (this file run as a script: `python tests/test_sharding.py OUT_DIR`), which writes its results;
the tests here compare them. Meshes: 8x1, 4x2, 2x4 (data x model) against unsharded calls on one device;
every rule on every mesh for the forward pass, one rule per mesh (covering all three) for the costlier programs.
Relative error is METHOD.md §9's: max |difference| / max |reference| per prompt, at 1e-5 in float32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TOL = 1e-5
MESHES = {"8x1": "replicated", "4x2": "fsdp", "2x4": "tensor"}  # the rule exercised by the costlier programs
TINY = dict(vocab_size=64, d_model=32, d_ff=48, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8,
            max_position_embeddings=128)
LLAMA2_7B = dict(vocab_size=32000, d_model=4096, d_ff=11008, n_layers=32, n_heads=32, n_kv_heads=32, head_dim=128)
LLAMA2_70B = dict(vocab_size=32000, d_model=8192, d_ff=28672, n_layers=80, n_heads=64, n_kv_heads=8, head_dim=128)


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


# ---- the worker (8 forced CPU devices) ---------------------------------------------------------------------

def _worker(out_dir: Path) -> None:
    import jax

    from jaxkn import interventions, sharding
    from jaxkn.attribution import AttributionConfig, attribute_batch, attribute_ids, make_batch
    from jaxkn.config import ModelConfig
    from jaxkn.convert.checkpoint import restore_params, save_checkpoint
    from jaxkn.generate import greedy_generate
    from jaxkn.model import forward, init_params
    from jaxkn.runtime import enable_compilation_cache

    enable_compilation_cache()
    assert len(jax.devices()) == 8, jax.devices()
    cfg = ModelConfig(**TINY)
    params = init_params(cfg, jax.random.PRNGKey(0), scale=0.2)  # large enough that attributions are not ~0
    rs = np.random.RandomState(0)
    prompts = [[int(t) for t in rs.randint(0, 64, rs.randint(3, 8))] for _ in range(5)]  # 5 rows: padding used
    answers = [[int(t) for t in rs.randint(0, 64, rs.randint(1, 3))] for _ in range(5)]
    tokens = rs.randint(0, 64, (6, 9)).astype(np.int32)
    logits = jax.jit(lambda p, t: forward(p, t, cfg).logits)
    batch = make_batch(cfg, prompts, answers)
    attr_cfg = AttributionConfig(method="fast", steps=4)
    neurons = [(0, 3), (1, 7), (2, 40)]
    stacked = interventions.stack([interventions.scale_neurons(neurons, f, cfg) for f in (0.0, 0.5, 2.0)])

    out = {"forward/1": logits(params, tokens), "attr/1": attribute_batch(params, batch, cfg, attr_cfg).scores,
           "sweep/1": interventions.sweep(params, cfg, prompts[0], answers[0], stacked).per_token,
           "generate/1": greedy_generate(params, cfg, prompts[:3], 4)}
    for name, rule_here in MESHES.items():
        mesh = sharding.make_mesh(*sharding.parse_mesh(name))
        for rule in sharding.RULES:
            placed = sharding.shard_params(params, cfg, mesh, rule)
            out[f"forward/{name}/{rule}"] = sharding.run_sharded(logits, placed, tokens, mesh=mesh)
        placed = sharding.shard_params(params, cfg, mesh, rule_here)
        out[f"attr/{name}"] = sharding.run_sharded(attribute_batch, placed, batch, cfg, attr_cfg, mesh=mesh).scores
        sharded_sweep, n = sharding.shard_batch(stacked, mesh)  # the N interventions split over "data"
        swept = interventions.sweep(placed, cfg, prompts[0], answers[0], sharded_sweep).per_token
        out[f"sweep/{name}"] = np.asarray(swept)[:n]
        # the mesh= keywords: params placed by the call (rule) or kept where they already are (rule=None)
        out[f"attr_kw/{name}"] = attribute_ids(params, cfg, prompts, answers, attr_cfg, mesh=mesh,
                                               rule=rule_here).scores
        out[f"sweep_kw/{name}"] = interventions.sweep_factors(placed, cfg, prompts[0], answers[0], neurons,
                                                              (0.0, 0.5, 2.0), mesh=mesh).per_token
    mesh = sharding.make_mesh(2, 4)
    out["generate/2x4"] = greedy_generate(sharding.shard_params(params, cfg, mesh, "tensor"), cfg, prompts[:3], 4)
    out.update(_restore_checks(cfg, params, mesh, out_dir, logits, tokens, sharding, save_checkpoint, restore_params))
    arrays = {k: np.asarray(v) for k, v in out.items() if not k.startswith(("generate", "placement"))}
    np.savez(out_dir / "results.npz", **arrays)
    (out_dir / "results.json").write_text(json.dumps({k: v for k, v in out.items() if k not in arrays}))


def _restore_checks(cfg, params, mesh, out_dir, logits, tokens, sharding, save_checkpoint, restore_params):
    """Saves the params, restores them straight into the 2x4 tensor layout, records where every shard lives."""
    import jax

    save_checkpoint(out_dir / "ckpt", cfg, params, None)
    restored = restore_params(out_dir / "ckpt", cfg, sharding.param_shardings(cfg, mesh, "tensor"))
    coords = {int(d.id): [int(i), int(j)] for (i, j), d in np.ndenumerate(mesh.devices)}
    placement, equal = {}, True
    for path, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]:
        name = "/".join(str(p.key) for p in path)
        placement[name] = {"shape": list(leaf.shape), "spec": [str(a) for a in leaf.sharding.spec],
                           "shards": sharding.describe_placement(leaf)}
        ref = np.asarray(_lookup(params, name))
        equal &= all(np.array_equal(np.asarray(s.data), ref[s.index]) for s in leaf.addressable_shards)
    return {"placement": {"coords": coords, "leaves": placement, "shards_equal_saved": bool(equal)},
            "forward/restored": sharding.run_sharded(logits, restored, tokens, mesh=mesh)}


def _lookup(tree, name):
    for key in name.split("/"):
        tree = tree[key]
    return tree


# ---- the tests ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mesh_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sharding")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, str(out_dir)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"8-device worker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    arrays = dict(np.load(out_dir / "results.npz"))
    return arrays, json.loads((out_dir / "results.json").read_text())


@pytest.mark.parametrize("mesh", sorted(MESHES))
@pytest.mark.parametrize("rule", ["replicated", "fsdp", "tensor"])
def test_forward_equal_on_every_mesh_and_rule(mesh_results, mesh, rule):
    arrays, _ = mesh_results
    got, ref = arrays[f"forward/{mesh}/{rule}"], arrays["forward/1"]
    assert got.shape == ref.shape  # padding rows (6 rows on a data axis of 4 or 8) were dropped
    assert rel_err(got, ref) <= TOL


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_attributions_equal_one_device(mesh_results, mesh):
    arrays, _ = mesh_results
    got, ref = arrays[f"attr/{mesh}"], arrays["attr/1"]
    assert got.shape == ref.shape == (5, 3, 48)
    assert np.abs(ref).max() > 1e-6  # a real signal, not zeros compared with zeros
    for row in range(ref.shape[0]):
        assert rel_err(got[row], ref[row]) <= TOL, (mesh, row, rel_err(got[row], ref[row]))


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_sweeps_equal_one_device(mesh_results, mesh):
    arrays, _ = mesh_results
    got, ref = arrays[f"sweep/{mesh}"], arrays["sweep/1"]
    assert got.shape == ref.shape and ref.shape[0] == 3
    assert rel_err(got, ref) <= TOL


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_mesh_keyword_of_attribute_ids_and_sweeps_equals_one_device(mesh_results, mesh):
    arrays, _ = mesh_results
    got, ref = arrays[f"attr_kw/{mesh}"], arrays["attr/1"]
    assert got.shape == ref.shape == (5, 3, 48)
    for row in range(ref.shape[0]):
        assert rel_err(got[row], ref[row]) <= TOL, (mesh, row)
    got, ref = arrays[f"sweep_kw/{mesh}"], arrays["sweep/1"]
    assert got.shape == ref.shape and rel_err(got, ref) <= TOL


def test_rule_without_mesh_is_refused():
    import jax

    from jaxkn import interventions
    from jaxkn.attribution import AttributionInputError, attribute_ids
    from jaxkn.config import ModelConfig
    from jaxkn.model import init_params

    cfg = ModelConfig(**TINY)
    params = init_params(cfg, jax.random.PRNGKey(0))
    with pytest.raises(AttributionInputError, match="needs a mesh"):
        attribute_ids(params, cfg, [[1, 2]], [[3]], rule="fsdp")
    with pytest.raises(ValueError, match="needs a mesh"):
        interventions.sweep_factors(params, cfg, [1, 2], [3], [(0, 1)], (0.0,), rule="tensor")


def test_generation_identical_under_tensor_parallelism(mesh_results):
    _, other = mesh_results
    assert other["generate/2x4"] == other["generate/1"]


def test_checkpoint_restores_straight_into_2x4_tensor_layout(mesh_results):
    arrays, other = mesh_results
    placement = other["placement"]
    assert placement["shards_equal_saved"]
    coords = {int(k): v for k, v in placement["coords"].items()}
    assert sorted(coords) == list(range(8))
    leaves = placement["leaves"]

    def expected_block(leaf, axis, device):  # model shard j of 4 along `axis`, full extent elsewhere
        shape = leaf["shape"]
        j = coords[device][1]
        return [[j * shape[a] // 4, (j + 1) * shape[a] // 4] if a == axis else [0, shape[a]] for a in range(len(shape))]

    split = {"layers/wq": 2, "layers/w_gate": 2, "layers/w_up": 2, "layers/wo": 1, "layers/w_down": 1,
             "embed": 0, "lm_head": 1}
    for name, axis in split.items():
        shards = leaves[name]["shards"]
        assert len(shards) == 8, name
        for device, block in shards:
            assert [list(b) for b in block] == expected_block(leaves[name], axis, device), (name, device)
    # 2 KV heads cannot split 4 ways: wk/wv are replicated (module docstring), as are the norms
    for name in ("layers/wk", "layers/wv", "layers/attn_norm", "final_norm"):
        full = [[0, n] for n in leaves[name]["shape"]]
        assert all([list(b) for b in block] == full for _, block in leaves[name]["shards"]), name
    assert rel_err(arrays["forward/restored"], arrays["forward/1"]) <= TOL


# ---- in-process checks (one device) ------------------------------------------------------------------------

def test_rules_on_llama_shapes():
    import jax
    from jax.sharding import PartitionSpec as P

    from jaxkn.config import ModelConfig
    from jaxkn.sharding import param_specs

    cfg70 = ModelConfig(**LLAMA2_70B)
    tensor = param_specs(cfg70, "tensor", 8)
    assert tensor["layers"]["wk"] == P(None, None, "model")  # 8 KV heads split 8 ways
    assert tensor["layers"]["w_down"] == P(None, "model", None)
    assert tensor["layers"]["mlp_norm"] == P()
    fsdp = param_specs(ModelConfig(**LLAMA2_7B), "fsdp", 4)
    assert fsdp["layers"]["w_up"] == P(None, None, "model")  # F = 11008 > D = 4096
    assert fsdp["layers"]["attn_norm"] == P(None, "model")  # the layer axis is never split
    assert fsdp["embed"] == P("model", None)
    replicated = jax.tree_util.tree_leaves(param_specs(cfg70, "replicated", 8), is_leaf=lambda s: isinstance(s, P))
    assert replicated and all(s == P() for s in replicated)


def test_bad_meshes_and_rules_are_named():
    from jaxkn.config import ModelConfig
    from jaxkn.sharding import ShardingError, make_mesh, param_specs, parse_mesh, shard_batch

    with pytest.raises(ShardingError, match="needs 16 devices"):
        make_mesh(4, 4)
    with pytest.raises(ShardingError, match="DATAxMODEL"):
        parse_mesh("4-2")
    with pytest.raises(ShardingError, match="unknown sharding rule"):
        param_specs(ModelConfig(**TINY), "zero3", 2)
    with pytest.raises(ShardingError, match="n_heads=4 is not a multiple of the model axis size 8"):
        param_specs(ModelConfig(**TINY), "tensor", 8)
    with pytest.raises(ShardingError, match="same leading batch axis"):
        shard_batch((np.zeros((3, 2)), np.zeros((4, 2))), make_mesh(1, 1))


def test_pad_rows_and_single_device_round_trip():
    from jaxkn.sharding import make_mesh, pad_rows, shard_batch, unpad

    x = np.arange(10).reshape(5, 2)
    padded = pad_rows(x, 4)
    assert padded.shape == (8, 2) and (padded[5:] == x[-1]).all() and (padded[:5] == x).all()
    placed, n = shard_batch({"x": x}, make_mesh(1, 1))
    assert n == 5 and (unpad(placed, n)["x"] == x).all()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
