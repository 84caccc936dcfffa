"""Weight edits on knowledge neurons (METHOD.md §7), as the EleutherAI knowledge-neurons library offers them,
but pure: each function returns new params and leaves its input untouched.

Neuron (l, i) at the "product" site writes `a_i * w_down[l, i]` into the residual stream: row i of layer l's
`w_down` [F, D] is its **value vector**. Only that site has value vectors (the "gate" and "act" sites are read
again by `up` or the product before `down`), so every edit here rejects other sites.

- `erase_neurons(mode="zero")` sets the value vectors to zero: for every input, the same logits as suppressing
  the neurons (factor 0) at every position. `mode="unk"` sets them to the token embedding of an unknown-token
  id instead (EleutherAI offers this for BERT's [UNK]; LLaMA tokenizers may have no such token, so the id is
  an explicit argument).
- `edit_toward_token` adds `alpha * (E[target] - E[source])` to the value vectors (EleutherAI's
  `edit_knowledge`: alpha 2, source = the model's original prediction), with E the input token embedding
  (`params["embed"]`, which is also the unembedding when embeddings are tied). Without `source_id` only the
  target direction is added. The push is along +E[target] only where the neuron's activation is positive: at
  the product site activations have either sign, so check the sign before expecting P(target) to rise.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxkn.interventions import neuron_array
from jaxkn.model import Params

ERASE_MODES = ("zero", "unk")


def _check_site(site: str) -> None:
    if site != "product":
        raise ValueError(f"weight edits change value vectors (rows of w_down), which only the 'product' site "
                         f"reads; site {site!r} has none: use an activation intervention "
                         f"(jaxkn.interventions) for it")


def _pairs(params: Params, neurons) -> np.ndarray:
    n_layers, d_ff, _ = params["layers"]["w_down"].shape
    return neuron_array(neurons, n_layers, d_ff)


def _token_row(params: Params, token_id: int, what: str):
    vocab = params["embed"].shape[0]
    if not 0 <= int(token_id) < vocab:
        raise ValueError(f"{what} token id {token_id} is out of range for a vocabulary of {vocab}")
    return params["embed"][int(token_id)]


def _with_w_down(params: Params, w_down) -> Params:
    # Shallow copies: only w_down is new; every other leaf is shared (arrays are immutable anyway).
    return {**params, "layers": {**params["layers"], "w_down": w_down}}


def erase_neurons(params: Params, neurons, *, mode: str = "zero", unk_token_id: int | None = None,
                  site: str = "product") -> Params:
    """New params with the neurons' value vectors erased.

    Args:
      neurons: (layer, index) pairs.
      mode: "zero" (the value vector becomes 0) or "unk" (it becomes the embedding of `unk_token_id`).
      unk_token_id: required for mode "unk".
      site: must be "product" (see the module docstring).
    """
    _check_site(site)
    if mode not in ERASE_MODES:
        raise ValueError(f"unknown erase mode {mode!r}; choose from {ERASE_MODES}")
    pairs = _pairs(params, neurons)
    w_down = params["layers"]["w_down"]
    if mode == "zero":
        value = jnp.zeros((), w_down.dtype)
    else:
        if unk_token_id is None:
            raise ValueError("mode 'unk' needs unk_token_id (the token whose embedding replaces the value "
                             "vectors); LLaMA-family tokenizers often have no unknown token")
        value = _token_row(params, unk_token_id, "unk").astype(w_down.dtype)
    return _with_w_down(params, w_down.at[pairs[:, 0], pairs[:, 1]].set(value))


def edit_toward_token(params: Params, neurons, target_id: int, *, source_id: int | None = None,
                      alpha: float = 2.0, site: str = "product") -> Params:
    """New params whose value vectors move toward the target token's embedding (EleutherAI's edit).

    w_down[l, i] += alpha * (E[target_id] - E[source_id]) for every neuron (l, i); without `source_id` the
    subtraction is skipped.
    """
    _check_site(site)
    pairs = _pairs(params, neurons)
    w_down = params["layers"]["w_down"]
    direction = _token_row(params, target_id, "target")
    if source_id is not None:
        direction = direction - _token_row(params, source_id, "source")
    delta = (alpha * direction).astype(w_down.dtype)
    return _with_w_down(params, w_down.at[pairs[:, 0], pairs[:, 1]].add(delta))


__all__ = ["ERASE_MODES", "erase_neurons", "edit_toward_token"]
