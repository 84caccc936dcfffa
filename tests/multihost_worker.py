"""One host of the two-process test in tests/test_multihost.py (run as a script, 2 CPU devices per process).

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

Two patterns, as in `jaxkn.distributed`:
  items:  each host runs its block of the items on a mesh over its own devices; results are gathered and
          written once by process 0 (items.json);
  global: one 2x2 mesh over both hosts' devices (fsdp within a host); each host feeds its rows of one batch, every host runs the
          same program, and the logits are gathered (global.npy, written by process 0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

N_ITEMS = 7  # odd: the two hosts get blocks of 4 and 3
TINY = dict(vocab_size=64, d_model=32, d_ff=48, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8,
            max_position_embeddings=128)


def fake_items() -> list[dict]:
    rs = np.random.RandomState(1)
    return [{"case_id": f"case-{i}", "prompt": [int(t) for t in rs.randint(0, 64, 6)]} for i in range(N_ITEMS)]


def global_tokens() -> np.ndarray:
    return np.random.RandomState(2).randint(0, 64, (8, 6)).astype(np.int32)


def model():
    import jax

    from jaxkn.config import ModelConfig
    from jaxkn.model import init_params

    cfg = ModelConfig(**TINY)
    return cfg, init_params(cfg, jax.random.PRNGKey(0), scale=0.2)


def item_results(params, cfg, items: list[dict], mesh) -> list[dict]:
    """Per item: the next token, its logit and the most active neuron at the last position (JSON-ready)."""
    import jax
    import jax.numpy as jnp

    from jaxkn.model import forward
    from jaxkn.sharding import run_sharded, shard_params

    def last_position(p, tokens):
        last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1)
        out = forward(p, tokens, cfg, capture=("product",), capture_at=last, logits_at=last)
        return out.logits[:, 0], out.captures["product"][:, :, 0].transpose(1, 0, 2)  # [B, V], [B, L, F]

    tokens = np.asarray([item["prompt"] for item in items], np.int32)
    logits, acts = run_sharded(jax.jit(last_position), shard_params(params, cfg, mesh, "replicated"), tokens,
                               mesh=mesh)
    results = []
    for item, row, act in zip(items, logits, acts):
        layer, neuron = np.unravel_index(int(np.abs(act).argmax()), act.shape)
        results.append({"case_id": item["case_id"], "next_token": int(row.argmax()), "logits": row.tolist(),
                        "top_neuron": [int(layer), int(neuron)]})
    return results


def main(process_id: int, num_processes: int, port: int, out_dir: Path) -> None:
    import jax

    from jaxkn import distributed
    from jaxkn.model import forward
    from jaxkn.sharding import make_mesh, shard_params

    distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
    assert jax.process_count() == num_processes and len(jax.devices()) == 2 * num_processes
    cfg, params = model()
    items = fake_items()
    mine = distributed.shard_items(items)
    print("HANDLED", json.dumps([item["case_id"] for item in mine]), flush=True)
    local_mesh = make_mesh(len(jax.local_devices()), 1, devices=jax.local_devices())
    gathered = distributed.gather_results(item_results(params, cfg, mine, local_mesh), len(items))
    distributed.check_unique(gathered, "case_id")
    written = distributed.write_once(out_dir / "items.json", gathered)
    print("WROTE", json.dumps(str(written) if written else None), flush=True)

    # one program over both hosts: a 2x2 mesh, "data" across hosts (4 of the 8 rows each), "model" within
    mesh = make_mesh(num_processes, 2)
    rows = global_tokens()[distributed.host_block(8)]
    tokens = distributed.global_batch(rows, mesh)
    logits = jax.jit(lambda p, t: forward(p, t, cfg).logits)(shard_params(params, cfg, mesh, "fsdp"), tokens)
    full = distributed.to_host(logits)
    if jax.process_index() == 0:
        np.save(out_dir / "global.npy", full)
    distributed.barrier("global-written")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
