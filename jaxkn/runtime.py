"""Process-level JAX settings jaxkn relies on: the persistent compilation cache and prompt-length buckets."""

from __future__ import annotations

import os
from pathlib import Path

# Prompt lengths are padded up to one of these so compiled shapes repeat across facts.
LENGTH_BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def cache_dir() -> Path:
    """Where jaxkn keeps converted checkpoints and compiled programs ($JAXKN_CACHE, default ~/.cache/jaxkn)."""
    return Path(os.environ.get("JAXKN_CACHE", Path.home() / ".cache" / "jaxkn"))


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache (idempotent): recompiling the same shapes costs a file read.

    The folder is `path`, else $JAXKN_XLA_CACHE, else `cache_dir()/xla`. JAX writes its entries in place, so a
    process killed mid-write can leave a truncated entry that aborts the next reader: runs that are killed on
    purpose (the fault tests) run with JAXKN_XLA_CACHE=off: no persistent cache, nothing half-written.
    Returns the folder, or None when turned off.
    """
    import jax

    if path is None:
        path = os.environ.get("JAXKN_XLA_CACHE") or cache_dir() / "xla"
        if str(path).lower() == "off":
            return None
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def bucket_length(n: int, buckets: tuple[int, ...] = LENGTH_BUCKETS) -> int:
    """The smallest bucket >= n (n itself beyond the largest bucket)."""
    for b in buckets:
        if b >= n:
            return b
    return n
