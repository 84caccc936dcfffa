"""Checkpoint conversion: HF folders and GGUF files -> jaxkn checkpoint folders (`python -m jaxkn.convert`)."""

from jaxkn.convert.checkpoint import load_checkpoint, restore_params, save_checkpoint
from jaxkn.convert.gguf import convert_gguf
from jaxkn.convert.hf import convert_hf
from jaxkn.convert.mapping import CheckpointError

__all__ = ["CheckpointError", "convert_gguf", "convert_hf", "load_checkpoint", "restore_params", "save_checkpoint"]
