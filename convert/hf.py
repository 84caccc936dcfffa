"""Reads an HF model folder (config.json + safetensors) into (ModelConfig, params, Tokenizer).

Conventions:
- Weights come from `model.safetensors` or the shards listed in `model.safetensors.index.json`, read tensor by
  tensor with `safetensors.safe_open(..., framework="numpy")` (bfloat16 included), never all at once.
- A `pytorch_model.bin` is read only with `torch.load(weights_only=True)` (no arbitrary unpickling), and only
  when torch is installed.
- Names map through `convert.mapping.hf_names(cfg)`; every jaxkn leaf must be filled and every tensor used.
- A multimodal Gemma 3 folder (`model_type: gemma3`) is read as its text model: tensors under
  `language_model.` are the text model's, the vision tower and projector are skipped on purpose.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from jaxkn.config import ModelConfig
from jaxkn.convert.mapping import CheckpointError, assemble_params
from jaxkn.tokenizer import Tokenizer

SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
# Multimodal Gemma 3: the Hub's layout (language_model.model.*) and transformers 5's in-memory one
# (model.language_model.*); the image side is not part of the text model.
_VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")
_TEXT_PREFIXES = {"language_model.": "", "model.language_model.": "model."}


def _is_multimodal(directory: Path) -> bool:
    config = json.loads((directory / "config.json").read_text())
    return config.get("model_type") == "gemma3" and "text_config" in config


def text_model_names(names, multimodal: bool) -> dict[str, str]:
    """text-model tensor name -> the name in the checkpoint (vision tensors of a multimodal model left out)."""
    if not multimodal:
        return {name: name for name in names}
    out = {}
    for name in names:
        if name.startswith(_VISION_PREFIXES):
            continue
        new = name
        for prefix, replacement in _TEXT_PREFIXES.items():
            if name.startswith(prefix):
                new = replacement + name[len(prefix):]
                break
        out[new] = name
    return out


def read_hf_config(directory: str | Path, dtype: str | None = None) -> ModelConfig:
    """`ModelConfig.from_hf_dict` of `directory/config.json`, with the params dtype overridden if given."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"no config.json in {directory}")
    cfg = ModelConfig.from_hf_dict(json.loads(path.read_text()))
    return cfg.replace(param_dtype=dtype) if dtype else cfg


def _safetensors_files(directory: Path) -> dict[str, Path]:
    """tensor name -> the safetensors file holding it (one file, or the shards of an index)."""
    from safetensors import safe_open

    index = directory / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: directory / shard for name, shard in weight_map.items()}
    path = directory / SAFETENSORS
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {name: path for name in f.keys()}
    except Exception as e:
        raise CheckpointError(f"cannot read safetensors file {path} (truncated or corrupt?): {e}") from e


def _convert_safetensors(directory: Path, cfg: ModelConfig) -> dict:
    from safetensors import safe_open

    files = _safetensors_files(directory)
    names = text_model_names(files, _is_multimodal(directory))
    with ExitStack() as stack:
        handles: dict[Path, object] = {}

        def get_tensor(name: str) -> np.ndarray:
            name = names[name]
            path = files[name]
            try:
                if path not in handles:
                    handles[path] = stack.enter_context(safe_open(str(path), framework="numpy"))
                return handles[path].get_tensor(name)
            except Exception as e:
                raise CheckpointError(f"cannot read tensor {name!r} from {path} (truncated or corrupt?): {e}") from e

        return assemble_params(cfg, get_tensor, set(names))


def _convert_torch_bin(path: Path, cfg: ModelConfig) -> dict:
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"{path} is a torch pickle; reading it needs torch installed. Prefer safetensors: "
                              f"re-save the model with save_pretrained(safe_serialization=True)") from e
    state = torch.load(path, map_location="cpu", weights_only=True)  # refuses arbitrary pickled objects
    names = text_model_names(state, _is_multimodal(path.parent))

    def get_tensor(name: str) -> np.ndarray:
        return state[names[name]].to(torch.float32).numpy()

    return assemble_params(cfg, get_tensor, set(names))


def convert_hf(directory: str | Path, dtype: str | None = None) -> tuple[ModelConfig, dict, Tokenizer | None]:
    """(config, params as numpy, tokenizer or None) from an HF model folder.

    Args:
      directory: holds config.json, the weights and (optionally) tokenizer.json / tokenizer_config.json.
      dtype: stored dtype of the params (default: the config's `dtype`, float32 if it names none).
    """
    directory = Path(directory)
    cfg = read_hf_config(directory, dtype)
    if (directory / SAFETENSORS_INDEX).is_file() or (directory / SAFETENSORS).is_file():
        params = _convert_safetensors(directory, cfg)
    elif (directory / TORCH_BIN).is_file():
        params = _convert_torch_bin(directory / TORCH_BIN, cfg)
    else:
        raise CheckpointError(f"no weights in {directory}: expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN}")
    tokenizer = Tokenizer.from_hf_dir(directory) if (directory / "tokenizer.json").is_file() else None
    return cfg, params, tokenizer
