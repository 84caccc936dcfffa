"""One call from a checkpoint to (config, params, tokenizer).

`load_model(path)` accepts a jaxkn checkpoint folder (`python -m jaxkn.convert`), an HF folder (config.json +
safetensors) or a `.gguf` file; the last two are converted in memory. `load_default_model()` converts the
embedded SmolLM2-135M-Instruct once into `jaxkn.runtime.cache_dir()` and loads it from there afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxkn.config import ModelConfig
from jaxkn.convert.checkpoint import is_checkpoint, load_checkpoint
from jaxkn.convert.gguf import convert_gguf
from jaxkn.convert.hf import convert_hf
from jaxkn.convert.hub import resolve_model
from jaxkn.convert.mapping import CheckpointError
from jaxkn.convert.smollm2 import convert_smollm2
from jaxkn.runtime import cache_dir

DEFAULT_MODEL_DIR = "smollm2-135m-instruct"


def load_model(path: str | Path, dtype: str | None = None, shardings=None):
    """(cfg, params, tokenizer) from a jaxkn checkpoint folder, an HF folder or a `.gguf` file.

    Args:
      path: where the model is.
      dtype: params dtype ("float32", "bfloat16", "float16"); default: the checkpoint's own
        (GGUF: float32, the dtype its weights are dequantised to).
      shardings: optional pytree of `jax.sharding.Sharding` matching the params (jaxkn checkpoints only
        restore straight into it; converted sources are placed with `jax.device_put`).
    """
    path = resolve_model(path)  # a path as is, or an "org/name" found in the local HF cache
    if is_checkpoint(path):
        cfg, params, tokenizer = load_checkpoint(path, shardings)
        if dtype is not None and dtype != cfg.param_dtype:
            cfg = cfg.replace(param_dtype=dtype)
            params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
        return cfg, params, tokenizer
    if path.is_file() and path.suffix == ".gguf":
        cfg, params, tokenizer = convert_gguf(path, dtype)
    elif path.is_dir() and (path / "config.json").is_file():
        cfg, params, tokenizer = convert_hf(path, dtype)
    else:
        raise CheckpointError(f"{path} is neither a jaxkn checkpoint folder, an HF model folder (config.json) "
                              f"nor a .gguf file")
    return cfg, _to_device(params, cfg, shardings), tokenizer


def _to_device(params, cfg: ModelConfig, shardings):
    dtype = jnp.dtype(cfg.param_dtype)
    if shardings is None:
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    return jax.tree_util.tree_map(lambda a, s: jax.device_put(jnp.asarray(a, dtype), s), params, shardings)


def default_model_dir() -> Path:
    return cache_dir() / DEFAULT_MODEL_DIR


def load_default_model(dtype: str | None = None, shardings=None):
    """(cfg, params, tokenizer) of SmolLM2-135M-Instruct, converted on first use into the jaxkn cache.

    The conversion writes into a temporary folder beside the target and renames it into place, so concurrent
    processes (test workers) never see a half-written checkpoint; the loser of the race discards its copy.
    """
    target = default_model_dir()
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_DIR}-", dir=target.parent))
        try:
            convert_smollm2(tmp)
            os.rename(tmp, target)  # atomic; fails if another process got there first
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_model(target, dtype=dtype, shardings=shardings)
