"""The jaxkn checkpoint format: a folder with the config, the params (orbax) and the tokenizer.

    out_dir/config.json   ModelConfig.save
    out_dir/params/       orbax StandardCheckpointer (the params pytree as is; written atomically by orbax)
    out_dir/tokenizer/    Tokenizer.save (HF tokenizer.json + tokenizer_config.json)
    out_dir/jaxkn_checkpoint.json   the marker: format, version, and the entries jaxkn wrote

Writing never loses data: `save_checkpoint` refuses an output folder that holds anything jaxkn did not write
(checked by `check_target` before any weight is read or written), writes into a temporary folder beside the
target (`.OUT.jaxkn-tmp-<host>-<pid>`, same parent, so the final rename is atomic) and renames it into place
at the end. A killed run leaves only its temporary folder; the next write to the same target removes temporary
folders whose process is gone. `overwrite=True` replaces a previous jaxkn checkpoint (recognised by the marker,
or by the exact layout of checkpoints written before the marker existed), never a foreign folder.

`restore_params` restores into an abstract target built from `param_shapes(cfg)` and the config's dtype, so a
checkpoint whose shapes or dtypes disagree with its config fails loudly; with `shardings` the arrays land
directly in a sharded layout (multi-device loading).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxkn.config import ModelConfig
from jaxkn.convert.mapping import CheckpointError
from jaxkn.model import param_shapes
from jaxkn.tokenizer import Tokenizer
from jaxkn.validation import check_json_files, check_tokenizer_fits, read_json_object

CONFIG_FILE, PARAMS_DIR, TOKENIZER_DIR = "config.json", "params", "tokenizer"
MARKER_FILE, MARKER_FORMAT, MARKER_VERSION = "jaxkn_checkpoint.json", "jaxkn-checkpoint", 1
CHECKPOINT_ENTRIES = frozenset({CONFIG_FILE, PARAMS_DIR, TOKENIZER_DIR, MARKER_FILE})
ORBAX_FILES = ("_CHECKPOINT_METADATA", "_METADATA")  # what orbax's StandardCheckpointer always writes
TMP_TAG, OLD_TAG = "jaxkn-tmp", "jaxkn-old"
OTHER_HOST_TEMP_AGE_S = 86400.0  # a pid on another host cannot be checked from here; after a day it is dead


class TargetExistsError(CheckpointError):
    """The output folder exists and holds something `save_checkpoint` may not replace."""


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a folder written by `save_checkpoint`."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir()


# ---- what is in a folder -----------------------------------------------------------------------------

def read_marker(path: str | Path) -> dict | None:
    """The marker of a jaxkn checkpoint folder, or None when there is none (or it is not jaxkn's)."""
    try:
        marker = json.loads((Path(path) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None


def _orbax_params(path: Path) -> bool:
    params = path / PARAMS_DIR
    return params.is_dir() and all((params / name).is_file() for name in ORBAX_FILES)


def written_by_jaxkn(path: str | Path) -> bool:
    """Whether the folder `path` is a jaxkn checkpoint, complete or not, and holds nothing else.

    Recognised by the marker, or (checkpoints written before the marker existed) by params/ as orbax writes
    it; either way a folder with any other entry (a user's notes, an HF config beside it) is not jaxkn's alone.
    """
    path = Path(path)
    if not path.is_dir() or not {p.name for p in path.iterdir()} <= CHECKPOINT_ENTRIES:
        return False
    return read_marker(path) is not None or _orbax_params(path)


def _describe(path: Path, limit: int = 6) -> str:
    """The entries of `path` jaxkn would not write there (all entries when each alone could be jaxkn's)."""
    entries = sorted(path.iterdir())
    foreign = [p for p in entries if p.name not in CHECKPOINT_ENTRIES] or entries
    names = [p.name + ("/" if p.is_dir() else "") for p in foreign]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_target(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Refuses an output folder that `save_checkpoint` may not write; cheap, so call it before converting.

    Allowed: a missing or empty folder; with `overwrite`, a previous jaxkn checkpoint. Refused: a file, any
    folder holding something jaxkn did not write (an HF model folder, say), and without `overwrite` a jaxkn
    checkpoint. Returns the absolute target path.
    """
    out = Path(out_dir).absolute()
    if not out.exists():
        return out
    if not out.is_dir():
        raise TargetExistsError(f"output {out} exists and is a file, not a folder; choose another output path")
    if not any(out.iterdir()):
        return out
    if not written_by_jaxkn(out):
        raise TargetExistsError(
            f"output folder {out} already holds files jaxkn did not write ({_describe(out)}); refusing to "
            f"replace them (--overwrite only ever replaces a jaxkn checkpoint). Choose a new or empty output "
            f"folder")
    if not overwrite:
        state = ("a jaxkn checkpoint" if is_checkpoint(out) else
                 f"an incomplete jaxkn checkpoint (no {CONFIG_FILE}: an interrupted conversion)")
        raise TargetExistsError(f"output folder {out} already holds {state}; pass --overwrite "
                                f"(overwrite=True) to replace it, or choose another output folder")
    return out


# ---- temporary folders ------------------------------------------------------------------------------

def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def temp_path(out: Path, tag: str = TMP_TAG, pid: int | None = None, host: str | None = None) -> Path:
    """Where a write to `out` stages its files: beside `out`, so the final rename stays on one filesystem.

    The name carries the host and pid of the writer (`.OUT.jaxkn-tmp-<host>-<pid>`), so a later run can tell
    whether the writer is still alive (on a filesystem shared by several hosts, only its own host can).
    """
    return out.parent / f".{out.name}.{tag}-{host or _host()}-{os.getpid() if pid is None else pid}"


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), from Linux's /proc; None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime; the name may contain spaces
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _pid_alive(pid: int, since: float) -> bool:
    """Whether process `pid` may still be writing a folder last modified at `since`: it exists and did not
    start after that (a recycled pid, started later, is not the writer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    started = process_start_time(pid)
    return started is None or started <= since + 2.0  # btime has one-second resolution


def clean_stale_temps(out: str | Path) -> list[Path]:
    """Removes the temporary folders of writes to `out` whose process is gone; returns what it removed.

    A writer on this host is gone when its pid is (or was recycled by a later process); one on another host
    (a shared filesystem) cannot be checked, so its folder is removed only when untouched for a day.
    """
    out = Path(out).absolute()
    removed = []
    if not out.parent.is_dir():
        return removed
    me = (_host(), os.getpid())
    for tag in (TMP_TAG, OLD_TAG):
        prefix = f".{out.name}.{tag}-"
        for path in out.parent.glob(f"{prefix}*"):
            host, _, pid = path.name[len(prefix):].rpartition("-")
            if not pid.isdigit() or (host, int(pid)) == me:
                continue
            try:
                modified = path.stat().st_mtime
            except OSError:
                continue
            stale = (not _pid_alive(int(pid), modified) if host == me[0]
                     else time.time() - modified > OTHER_HOST_TEMP_AGE_S)
            if stale:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Renames the finished `tmp` to `out`; an existing jaxkn checkpoint (re-checked now) is moved aside first."""
    check_target(out, overwrite=overwrite)  # again: another process may have written `out` meanwhile
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = temp_path(out, OLD_TAG)
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
    try:
        os.rename(tmp, out)  # atomic; replaces an empty folder, fails on a non-empty one
    except OSError as e:
        if old is not None and not out.exists():
            os.rename(old, out)  # put the previous checkpoint back
        raise TargetExistsError(f"cannot move the new checkpoint into {out}: {e} (did another process write "
                                f"it meanwhile?)") from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staged_write(out_dir: str | Path, write, *, overwrite: bool = False) -> Path:
    """Runs `write(tmp)` on a fresh temporary folder beside `out_dir`, then renames it to `out_dir`.

    The target is checked (`check_target`) before `write` runs; stale temporary folders of earlier, killed
    writes to the same target are removed first. On any error the temporary folder is removed and the
    target is left as it was.
    """
    out = check_target(out_dir, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)
    tmp = temp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        _move_into_place(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---- writing and reading -----------------------------------------------------------------------------

def _write_checkpoint(out_dir: Path, cfg: ModelConfig, params: dict, tokenizer: Tokenizer | None) -> None:
    import orbax.checkpoint as ocp

    dtype = jnp.dtype(cfg.param_dtype)
    arrays = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=dtype), params)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out_dir / PARAMS_DIR, arrays)
        checkpointer.wait_until_finished()
    entries = [PARAMS_DIR, CONFIG_FILE]
    if tokenizer is not None:
        tokenizer.save(out_dir / TOKENIZER_DIR)
        entries.append(TOKENIZER_DIR)
    marker = dict(format=MARKER_FORMAT, version=MARKER_VERSION, entries=sorted(entries), written=time.time(),
                  model_type=cfg.model_type, param_dtype=cfg.param_dtype)
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    cfg.save(out_dir / CONFIG_FILE)  # written last: its presence marks a complete checkpoint


def save_checkpoint(out_dir: str | Path, cfg: ModelConfig, params: dict, tokenizer: Tokenizer | None, *,
                    overwrite: bool = False) -> Path:
    """Writes a jaxkn checkpoint folder (see the module docstring); `params` may hold numpy or jax arrays.

    Args:
      out_dir: the folder to create (missing or empty; with `overwrite`, a previous jaxkn checkpoint).
      cfg, params, tokenizer: what to write (tokenizer may be None).
      overwrite: replace a previous jaxkn checkpoint at `out_dir`. A folder holding anything else is refused.
    Raises:
      TargetExistsError: `out_dir` holds files that may not be replaced (nothing is written then).
    """
    check_tokenizer_fits(tokenizer, cfg, where=f"saving {out_dir}")
    return staged_write(out_dir, lambda tmp: _write_checkpoint(tmp, cfg, params, tokenizer), overwrite=overwrite)


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
    cfg = ModelConfig.from_dict(read_json_object(path / CONFIG_FILE, what="a jaxkn model config"))
    check_json_files(path / TOKENIZER_DIR)
    tokenizer = Tokenizer.load(path / TOKENIZER_DIR) if (path / TOKENIZER_DIR).is_dir() else None
    check_tokenizer_fits(tokenizer, cfg, where=path)  # before the weights: a mismatch is refused at no cost
    params = restore_params(path, cfg, shardings)
    return cfg, params, tokenizer
