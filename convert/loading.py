"""One call from a checkpoint to (config, params, tokenizer).

`load_model(path)` accepts a jaxkn checkpoint folder (`python -m jaxkn.convert`), an HF folder (config.json +
safetensors) or a `.gguf` file; the last two are converted in memory. `load_default_model()` converts the
embedded SmolLM2-135M-Instruct once into `jaxkn.runtime.cache_dir()` and loads it from there afterwards.
Every path checks that the tokenizer's ids fit the model's vocabulary before the model is used.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxkn.config import ModelConfig
from jaxkn.convert.checkpoint import TargetExistsError, clean_stale_temps, is_checkpoint, load_checkpoint
from jaxkn.convert.gguf import convert_gguf
from jaxkn.convert.hf import convert_hf
from jaxkn.convert.hub import resolve_model
from jaxkn.convert.mapping import CheckpointError
from jaxkn.convert.smollm2 import convert_smollm2
from jaxkn.runtime import cache_dir
from jaxkn.validation import check_json_files, check_tokenizer_fits

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
    cfg, params, tokenizer = read_source(path, dtype, also="a jaxkn checkpoint folder, ")
    return cfg, _to_device(params, cfg, shardings), tokenizer


def read_source(path: Path, dtype: str | None = None, *, also: str = ""):
    """(cfg, params as numpy, tokenizer) of an HF model folder (config.json + safetensors) or a `.gguf` file,
    converted in memory; the tokenizer is checked to fit the vocabulary. The one place that tells the two
    source kinds apart (`load_model` and `python -m jaxkn.convert` both read sources through it); `also`
    names what the caller accepts besides them, for the error."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        cfg, params, tokenizer = convert_gguf(path, dtype)
    elif path.is_dir() and (path / "config.json").is_file():
        check_json_files(path)  # a broken config.json or tokenizer file is named, with its line
        cfg, params, tokenizer = convert_hf(path, dtype)
    else:
        raise CheckpointError(f"{path} is neither {also}an HF model folder (with config.json) nor a .gguf file")
    check_tokenizer_fits(tokenizer, cfg, where=path)
    return cfg, params, tokenizer


def _to_device(params, cfg: ModelConfig, shardings):
    dtype = jnp.dtype(cfg.param_dtype)
    if shardings is None:
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    return jax.tree_util.tree_map(lambda a, s: jax.device_put(jnp.asarray(a, dtype), s), params, shardings)


def default_model_dir() -> Path:
    return cache_dir() / DEFAULT_MODEL_DIR


LEGACY_TEMP_AGE_S = 3600.0  # temp folders of older jaxkn versions carry no pid; older than this they are dead


def _clean_default_temps(target: Path) -> None:
    """Removes what killed first-use conversions left beside `target` (each a 333 MB copy of SmolLM2)."""
    clean_stale_temps(target)
    # Before staged writes existed, the temporary folder was tempfile.mkdtemp(prefix=".smollm2-135m-instruct-").
    for path in target.parent.glob(f".{target.name}-*"):
        if path.is_dir() and time.time() - path.stat().st_mtime > LEGACY_TEMP_AGE_S:
            shutil.rmtree(path, ignore_errors=True)


def load_default_model(dtype: str | None = None, shardings=None):
    """(cfg, params, tokenizer) of SmolLM2-135M-Instruct, converted on first use into the jaxkn cache.

    The conversion writes into a temporary folder beside the target and renames it into place, so concurrent
    processes (test workers) never see a half-written checkpoint; the loser of the race discards its copy.
    Temporary folders of conversions that were killed are removed by the next call.
    """
    target = default_model_dir()
    if target.parent.is_dir():
        _clean_default_temps(target)
    if not is_checkpoint(target):
        try:  # an incomplete checkpoint here is one of ours (checked by the marker or layout), so replace it
            convert_smollm2(target, overwrite=target.exists() and not is_checkpoint(target))
        except TargetExistsError:
            if not is_checkpoint(target):  # not another process's finished conversion: something else is there
                raise
    return load_model(target, dtype=dtype, shardings=shardings)
