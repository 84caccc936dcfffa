"""A Flax NNX shell over `jaxkn.forward`, for code that expects an `nnx.Module`.

jaxkn's model is a pure function over a params pytree (STYLE §2); this module wraps the same arrays, not copies,
as `nnx.Param`s, so NNX tooling (`nnx.split`, `nnx.state`, `nnx.jit`, `nnx.display`, orbax on `nnx.state`) works
on a jaxkn model while every computation still runs through `forward`:

    model = jaxkn.flax_model(cfg, params)
    out = model(tokens, edits=scale_edit(...), capture=("product",))   # == forward(params, tokens, cfg, ...)
    graphdef, state = nnx.split(model)
    params_of(model)                                                    # the exact dict forward takes

The module's state mirrors the params layout key for key (embed, layers/wq, ..., final_norm, lm_head), so an
orbax checkpoint of `params` and one of `nnx.state(model)` hold the same tree and each restores into the other
(`restore_into` reads a jaxkn checkpoint folder straight into a module).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
from flax import nnx
from jaxtyping import Array, Bool, Int

from jaxkn.config import ModelConfig
from jaxkn.model import ForwardOutput, Params, forward, param_shapes
from jaxkn.site import SiteEdit


class FlaxModel(nnx.Module):
    """`jaxkn.forward` as an `nnx.Module`: the config is static, every params leaf is an `nnx.Param`.

    Attributes:
      cfg: the model config (static: part of the graphdef, not the state).
      embed, final_norm, lm_head: `nnx.Param`s (lm_head absent when embeddings are tied).
      layers: an `nnx.Dict` of the stacked per-layer `nnx.Param`s ([L, ...], as in the params layout).
    """

    def __init__(self, cfg: ModelConfig, params: Params):
        _check_layout(cfg, params)
        self.cfg = cfg
        for name, value in params.items():
            setattr(self, name, _as_variables(value))

    def __call__(
        self,
        tokens: Int[Array, "B T"],
        *,
        valid: Bool[Array, "B T"] | None = None,
        positions: Int[Array, "B T"] | None = None,
        edits: SiteEdit | Sequence[SiteEdit] | None = (),
        capture: Sequence[str] = (),
        capture_at: Int[Array, "B P"] | None = None,
        logits_at: Int[Array, "B P"] | None = None,
        return_logits: bool = True,
        return_kv: bool = False,
    ) -> ForwardOutput:
        """`jaxkn.forward(params_of(self), tokens, self.cfg, ...)`; the keywords are forward's (see there)."""
        return forward(params_of(self), tokens, self.cfg, valid=valid, positions=positions, edits=edits,
                       capture=capture, capture_at=capture_at, logits_at=logits_at, return_logits=return_logits,
                       return_kv=return_kv)


def _as_variables(tree):
    """Nested dicts become `nnx.Dict`s, arrays `nnx.Param`s holding that very array (no copy)."""
    if isinstance(tree, dict):
        return nnx.Dict({key: _as_variables(value) for key, value in tree.items()})
    return nnx.Param(tree)


def _check_layout(cfg: ModelConfig, params: Params) -> None:
    """Refuses params whose tree or shapes disagree with `param_shapes(cfg)`, naming the first bad leaf."""
    want = param_shapes(cfg)
    is_shape = lambda s: isinstance(s, tuple)  # noqa: E731
    want_tree = jax.tree_util.tree_structure(want, is_leaf=is_shape)
    if jax.tree_util.tree_structure(params) != want_tree:
        raise ValueError(f"params have tree {jax.tree_util.tree_structure(params)}, but this config expects "
                         f"{want_tree}: pass the params that belong to cfg (e.g. from jaxkn.load_model)")
    got = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), shape in zip(got, jax.tree_util.tree_leaves(want, is_leaf=is_shape)):
        if tuple(leaf.shape) != shape:
            raise ValueError(f"param {jax.tree_util.keystr(path)} has shape {tuple(leaf.shape)}, this config "
                             f"expects {shape}")


def flax_model(cfg: ModelConfig, params: Params) -> FlaxModel:
    """The `nnx.Module` holding `params` (the same arrays) whose call is `jaxkn.forward`.

    Args:
      cfg: the model config.
      params: the params pytree (layout in `jaxkn.model`), e.g. from `jaxkn.load_model`.
    """
    return FlaxModel(cfg, params)


def params_of(module: FlaxModel) -> Params:
    """The params pytree of `module`: the nested dict of arrays `jaxkn.forward` takes (the module's own arrays)."""
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def abstract_flax_model(cfg: ModelConfig, shardings=None) -> FlaxModel:
    """A module of `jax.ShapeDtypeStruct`s (no memory): the restore target for orbax and `restore_into`."""
    from jaxkn.convert.checkpoint import abstract_params  # the checkpoint layer sits above the core

    return FlaxModel(cfg, abstract_params(cfg, shardings))


def restore_into(module: FlaxModel, path: str | Path, shardings=None) -> FlaxModel:
    """Restores an orbax checkpoint straight into `module`'s state and returns the module.

    Both forms restore: a jaxkn checkpoint folder (the params dict, as `jaxkn.convert` writes it) and an orbax
    save of `nnx.state(module)` (NNX's own layout, where each leaf sits under a `value` key).

    Args:
      module: a `FlaxModel` (possibly abstract, from `abstract_flax_model`); its `cfg` fixes shapes and dtypes.
      path: a jaxkn checkpoint folder (or its `params/` subfolder), or a folder holding a saved `nnx.state`.
      shardings: optional pytree of `jax.sharding.Sharding` matching the params (restored straight into it).
    """
    from jaxkn.convert.checkpoint import PARAMS_DIR, restore_params

    path = Path(path).absolute()
    params_dir = path / PARAMS_DIR if (path / PARAMS_DIR).is_dir() else path
    if _holds_nnx_state(params_dir):
        state = _restore_nnx_state(params_dir, module.cfg, shardings)
    else:
        state = nnx.state(module, nnx.Param)
        nnx.replace_by_pure_dict(state, restore_params(params_dir, module.cfg, shardings))
    nnx.update(module, state)
    return module


def _holds_nnx_state(params_dir: Path) -> bool:
    """Whether an orbax folder was saved from an `nnx.State` (its leaves are `{"value": array}` dicts)."""
    import orbax.checkpoint as ocp

    try:
        with ocp.StandardCheckpointer() as checkpointer:
            tree = checkpointer.metadata(params_dir).item_metadata.tree
    except Exception:  # not an orbax folder: restore_params raises the error that names the problem
        return False
    return isinstance(tree.get("embed"), dict) and set(tree["embed"]) == {"value"}


def _restore_nnx_state(params_dir: Path, cfg: ModelConfig, shardings):
    import orbax.checkpoint as ocp

    from jaxkn.convert.mapping import CheckpointError

    target = nnx.state(abstract_flax_model(cfg, shardings), nnx.Param)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            state = checkpointer.restore(params_dir, target)
    except Exception as e:  # orbax raises assorted errors for tree/shape/dtype mismatches
        raise CheckpointError(f"cannot restore the nnx state in {params_dir} for this config: {e}") from e
    got, want = nnx.to_pure_dict(state), nnx.to_pure_dict(target)
    for (where, a), t in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree_util.tree_leaves(want)):
        if a.shape != t.shape or a.dtype != t.dtype:
            raise CheckpointError(f"param {jax.tree_util.keystr(where)} in {params_dir} is {a.shape} {a.dtype}, "
                                  f"this config expects {t.shape} {t.dtype}")
    return state


def load_flax_model(path: str | Path, shardings=None):
    """(module, tokenizer) of a jaxkn checkpoint folder: `restore_into` an abstract module of its config."""
    from jaxkn.convert.checkpoint import CONFIG_FILE, TOKENIZER_DIR, is_checkpoint
    from jaxkn.convert.mapping import CheckpointError
    from jaxkn.tokenizer import Tokenizer

    path = Path(path)
    if not is_checkpoint(path):
        raise CheckpointError(f"{path} is not a jaxkn checkpoint folder: convert the model first "
                              f"(python -m jaxkn.convert SRC {path})")
    cfg = ModelConfig.load(path / CONFIG_FILE)
    module = restore_into(abstract_flax_model(cfg, shardings), path, shardings)
    tokenizer = Tokenizer.load(path / TOKENIZER_DIR) if (path / TOKENIZER_DIR).is_dir() else None
    return module, tokenizer


__all__ = ["FlaxModel", "abstract_flax_model", "flax_model", "load_flax_model", "params_of", "restore_into"]
