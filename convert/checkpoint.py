"""The jaxkn checkpoint format: a folder with the config, the params (orbax) and the tokenizer.

    out_dir/config.json   ModelConfig.save
    out_dir/params/       orbax StandardCheckpointer (the params pytree as is; written atomically by orbax)
    out_dir/tokenizer/    Tokenizer.save (HF tokenizer.json + tokenizer_config.json)

`restore_params` restores into an abstract target built from `param_shapes(cfg)` and the config's dtype, so a
checkpoint whose shapes or dtypes disagree with its config fails loudly; with `shardings` the arrays land
directly in a sharded layout (multi-device loading).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxkn.config import ModelConfig
from jaxkn.convert.mapping import CheckpointError
from jaxkn.model import param_shapes
from jaxkn.tokenizer import Tokenizer

CONFIG_FILE, PARAMS_DIR, TOKENIZER_DIR = "config.json", "params", "tokenizer"


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a folder written by `save_checkpoint`."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir()


def save_checkpoint(out_dir: str | Path, cfg: ModelConfig, params: dict, tokenizer: Tokenizer | None) -> Path:
    """Writes a jaxkn checkpoint folder (see the module docstring); `params` may hold numpy or jax arrays."""
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = jnp.dtype(cfg.param_dtype)
    arrays = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=dtype), params)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out_dir / PARAMS_DIR, arrays)
        checkpointer.wait_until_finished()
    if tokenizer is not None:
        tokenizer.save(out_dir / TOKENIZER_DIR)
    cfg.save(out_dir / CONFIG_FILE)  # written last: its presence marks a complete checkpoint
    return out_dir


def abstract_params(cfg: ModelConfig, shardings=None) -> dict:
    """The params tree as `jax.ShapeDtypeStruct`s (with `shardings`, a matching pytree of `Sharding`s)."""
    dtype = jnp.dtype(cfg.param_dtype)
    shapes = param_shapes(cfg)
    is_shape = lambda s: isinstance(s, tuple)  # noqa: E731
    if shardings is None:
        return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s, dtype), shapes, is_leaf=is_shape)
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s, dtype, sharding=sh), shapes, shardings,
                                  is_leaf=is_shape)


def restore_params(path: str | Path, cfg: ModelConfig, shardings=None) -> dict:
    """Restores the params of a checkpoint folder (or its `params/` subfolder), checked against `cfg`.

    Args:
      path: a folder written by `save_checkpoint`, or its `params` subfolder.
      cfg: the model config; it fixes every leaf's shape and dtype.
      shardings: optional pytree of `jax.sharding.Sharding` matching the params; arrays are restored straight
        into that layout (default: the first device, unsharded).
    """
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    params_dir = path / PARAMS_DIR if (path / PARAMS_DIR).is_dir() else path
    if not params_dir.is_dir():
        raise CheckpointError(f"no params folder at {params_dir}: convert the model first (python -m jaxkn.convert)")
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: device, param_shapes(cfg), is_leaf=lambda s: isinstance(s, tuple))
    target = abstract_params(cfg, shardings)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            params = checkpointer.restore(params_dir, target)
    except Exception as e:  # orbax raises assorted errors for tree/shape/dtype mismatches
        raise CheckpointError(f"cannot restore params from {params_dir} for this config: {e}") from e
    _check_restored(params, target, params_dir)
    return params


def _check_restored(params, target, where) -> None:
    got = jax.tree_util.tree_structure(params)
    want = jax.tree_util.tree_structure(target)
    if got != want:
        raise CheckpointError(f"params in {where} have tree {got}, config expects {want}")
    for (path, a), t in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(target)):
        if a.shape != t.shape or np.dtype(a.dtype) != np.dtype(t.dtype):
            raise CheckpointError(f"param {jax.tree_util.keystr(path)} in {where} is {a.shape} {a.dtype}, "
                                  f"config expects {t.shape} {t.dtype}")


def load_checkpoint(path: str | Path, shardings=None) -> tuple[ModelConfig, dict, Tokenizer | None]:
    """(config, params, tokenizer) of a folder written by `save_checkpoint`."""
    path = Path(path)
    if not is_checkpoint(path):
        raise CheckpointError(f"{path} is not a jaxkn checkpoint (needs {CONFIG_FILE} and {PARAMS_DIR}/)")
    cfg = ModelConfig.load(path / CONFIG_FILE)
    params = restore_params(path, cfg, shardings)
    tokenizer = Tokenizer.load(path / TOKENIZER_DIR) if (path / TOKENIZER_DIR).is_dir() else None
    return cfg, params, tokenizer
