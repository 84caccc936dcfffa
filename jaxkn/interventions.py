"""Activation interventions on knowledge neurons (METHOD.md §6.3, §7), as pure values.

An `Intervention` says how the neuron site is rescaled: a dense factor per layer and neuron, [L, F] (1 for
neurons outside the chosen sets), where (positions) and at which site. It is a registered pytree: traced when
passed to a jitted function, so a sweep over factors or neuron sets is one `vmap`ped compiled call over a
stacked Intervention (leading axis N), never a Python loop. Applying one never mutates params.

Positions (static):
- "last": the last real token of each row (the position that predicts the next token). Under teacher forcing
  (`answer_probability`) each answer token is predicted by its own row in which only its predicting position
  is scaled, which is what decoding in METHOD §6.3's "last" mode gives.
- "all": every real token, prompt included.
- "mask": an explicit 0/1 mask over token positions, [t] or [b, t]; positions beyond its length are untouched.

Neuron sets are sequences of (layer, index) pairs (EleutherAI's `[[layer, index], ...]` lists work as they are).
Validation happens when an Intervention is built: an empty set, or a layer or neuron index out of range, is a
ValueError naming the entry.

Answer probabilities are softmax probabilities (float32) of the gold tokens, teacher-forced: `first` is
P(y_1 | prompt) and `joint` is the product over the K answer tokens, P(y_1..y_K | prompt) (not a mean).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxkn.config import ModelConfig
from jaxkn.generate import MODES, Generation, generate
from jaxkn.model import Params, forward
from jaxkn.runtime import bucket_length
from jaxkn.site import SITES, SiteEdit, scale_edit
from jaxkn.validation import check_all_finite, check_token_ids

POSITIONS = ("last", "all", "mask")
ENHANCE, SUPPRESS = 2.0, 0.0


# ---- neuron sets -------------------------------------------------------------------------------------

def _is_index(x) -> bool:
    # bools are ints to Python and numpy: (True, 5) would silently mean layer 1
    if isinstance(x, jax.Array):
        return x.ndim == 0 and jnp.issubdtype(x.dtype, jnp.integer)
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _pairs(neurons) -> np.ndarray:
    """The neuron set as an array, every entry checked to be a pair of integers (not bools, not floats)."""
    if isinstance(neurons, (np.ndarray, jax.Array)):
        arr = np.asarray(neurons)
        if arr.dtype == bool:
            raise ValueError(f"neurons must be integer (layer, index) pairs, got a bool array of shape {arr.shape}")
        return arr
    entries = []
    for k, entry in enumerate(neurons):
        try:
            entry = tuple(entry.tolist() if isinstance(entry, (np.ndarray, jax.Array)) else entry)
        except TypeError:
            entry = (entry,)
        if len(entry) != 2 or not all(map(_is_index, entry)):
            raise ValueError(f"neuron {k} is {entry!r}: each neuron must be an integer (layer, index) pair "
                             f"(not bools or floats)")
        entries.append(entry)
    return np.asarray(entries, np.int64)


def neuron_array(neurons, n_layers: int, d_ff: int) -> Int[np.ndarray, "n 2"]:
    """Validated, de-duplicated (layer, index) pairs, sorted, as an int array [n, 2].

    Raises ValueError for an empty set, a malformed entry (not a pair of integers: bools and floats are
    refused), or a layer or index out of range (naming it).
    """
    arr = _pairs(neurons)
    if arr.size == 0:
        raise ValueError("empty neuron set: an intervention needs at least one (layer, index) pair "
                         "(a fact whose refined set is empty is skipped by the experiment, not intervened on)")
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"neurons must be integer (layer, index) pairs, got an array of shape {arr.shape} "
                         f"and dtype {arr.dtype}")
    for layer, index in arr:
        if not 0 <= layer < n_layers:
            raise ValueError(f"neuron ({layer}, {index}): layer {layer} is out of range; the model has "
                             f"{n_layers} layers (0..{n_layers - 1})")
        if not 0 <= index < d_ff:
            raise ValueError(f"neuron ({layer}, {index}): neuron index {index} is out of range; each layer has "
                             f"{d_ff} neurons (0..{d_ff - 1})")
    return np.unique(arr, axis=0)


def per_layer_counts(neurons, n_layers: int, d_ff: int) -> np.ndarray:
    """How many neurons of the set sit in each layer, [L]."""
    return np.bincount(neuron_array(neurons, n_layers, d_ff)[:, 0], minlength=n_layers)


def _dims(cfg_or_shape) -> tuple[int, int]:
    if isinstance(cfg_or_shape, ModelConfig):
        return cfg_or_shape.n_layers, cfg_or_shape.d_ff
    n_layers, d_ff = cfg_or_shape
    return int(n_layers), int(d_ff)


def random_neurons(neurons, cfg: ModelConfig | tuple[int, int], seed, *,
                   exclude_original: bool = False) -> np.ndarray:
    """A random neuron set with the same count per layer as `neurons` (METHOD §5, §6.3 random control).

    `cfg` is the model config or its (L, F) shape.

    Drawn without replacement within each layer, from all neurons of the layer unless `exclude_original`
    (then the set's own neurons are never drawn). Reproducible: the same seed (int or tuple of ints) gives
    the same set. Returns sorted (layer, index) pairs, [n, 2].
    """
    n_layers, d_ff = _dims(cfg)
    own = neuron_array(neurons, n_layers, d_ff)
    counts = np.bincount(own[:, 0], minlength=n_layers)
    rng = np.random.default_rng(seed)
    drawn = []
    for layer, count in enumerate(counts):
        if count == 0:
            continue
        pool = np.arange(d_ff)
        if exclude_original:
            pool = np.setdiff1d(pool, own[own[:, 0] == layer, 1])
        picks = np.sort(rng.choice(pool, size=count, replace=False))
        drawn.append(np.stack([np.full(count, layer), picks], 1))
    return np.concatenate(drawn).astype(np.int64)


# ---- the intervention value --------------------------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Intervention:
    """A rescaling of knowledge neurons at one site.

    Attributes:
      factor: per-layer, per-neuron factor, [L, F] (1 = untouched); a stacked sweep has [N, L, F].
      mask: the explicit position mask, [t] or [b, t], when positions == "mask"; else None.
      positions: "last", "all" or "mask" (static).
      site: "product", "gate" or "act" (static).
    """

    factor: Float[Array, "L F"]
    mask: Float[Array, "b t"] | None = None
    positions: str = dataclasses.field(default="last", metadata=dict(static=True))
    site: str = dataclasses.field(default="product", metadata=dict(static=True))

    def __post_init__(self):
        # Only static fields are checked: jax rebuilds this class with placeholder leaves inside transforms.
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; choose from {POSITIONS} (or pass an array)")
        if self.site not in SITES:
            raise ValueError(f"unknown neuron site {self.site!r}; choose one of {SITES}")

    def where(self, valid) -> Float[Array, "B T"]:
        """1.0 at the positions this intervention scales, for a batch with real tokens `valid` [B, T]."""
        valid = jnp.asarray(valid, bool)
        t = valid.shape[1]
        if self.positions == "all":
            return valid.astype(jnp.float32)
        if self.positions == "last":
            last = t - 1 - jnp.argmax(valid[:, ::-1], axis=1)  # last real token, whatever the padding side
            return jax.nn.one_hot(last, t, dtype=jnp.float32)
        mask = jnp.atleast_2d(jnp.asarray(self.mask, jnp.float32))
        if mask.shape[-1] > t:
            raise ValueError(f"position mask covers {mask.shape[-1]} positions but the input has only {t}")
        mask = jnp.pad(mask, ((0, 0), (0, t - mask.shape[-1])))
        return jnp.broadcast_to(mask, valid.shape) * valid

    def to_site_edit(self, valid) -> SiteEdit:
        """The `SiteEdit` that `jaxkn.model.forward` applies, for a batch with real tokens `valid` [B, T]."""
        return scale_edit(self.factor, self.where(valid), self.site)

    def to_scale(self) -> Float[Array, "L F"]:
        """The [L, F] factor `jaxkn.generate.generate` takes (its `mode` says where it applies)."""
        if self.positions == "mask":
            raise ValueError("an explicit position mask has no meaning during generation; use positions "
                             "'last' or 'all'")
        return self.factor


Interventions = Intervention | tuple[Intervention, ...]


def site_edits(intervention: Interventions | None, valid) -> tuple[SiteEdit, ...]:
    """SiteEdits for `forward`, applied in order (a composed tuple gives one per part)."""
    if intervention is None:
        return ()
    parts = (intervention,) if isinstance(intervention, Intervention) else tuple(intervention)
    return tuple(part.to_site_edit(valid) for part in parts)


def _positions(positions) -> tuple[str, jax.Array | None]:
    if isinstance(positions, str):
        if positions not in ("last", "all"):
            raise ValueError(f"unknown positions {positions!r}; choose 'last', 'all' or pass a 0/1 mask array")
        return positions, None
    mask = jnp.asarray(positions, jnp.float32)
    if mask.ndim not in (1, 2):
        raise ValueError(f"a position mask is [t] or [b, t], got shape {mask.shape}")
    return "mask", mask


def scale_neurons(neurons, factor: float, cfg: ModelConfig, *, positions="last",
                  site: str = "product") -> Intervention:
    """Multiplies the neurons of `neurons` by `factor` (any finite float; 0 suppresses, 2 enhances)."""
    check_all_finite(factor, what="scale_neurons factor")
    pairs = neuron_array(neurons, cfg.n_layers, cfg.d_ff)
    factors = np.ones((cfg.n_layers, cfg.d_ff), np.float32)
    factors[pairs[:, 0], pairs[:, 1]] = factor
    positions, mask = _positions(positions)
    return Intervention(factor=jnp.asarray(factors), mask=mask, positions=positions, site=site)


def enhance(neurons, cfg: ModelConfig, **kw) -> Intervention:
    """Doubles the neurons (METHOD §6.3)."""
    return scale_neurons(neurons, ENHANCE, cfg, **kw)


def suppress(neurons, cfg: ModelConfig, **kw) -> Intervention:
    """Zeroes the neurons (METHOD §6.3)."""
    return scale_neurons(neurons, SUPPRESS, cfg, **kw)


def random_control(neurons, factor: float, cfg: ModelConfig, seed, *, exclude_original: bool = False,
                   **kw) -> Intervention:
    """The same rescaling on a seeded random set with the same count per layer (see `random_neurons`)."""
    return scale_neurons(random_neurons(neurons, cfg, seed, exclude_original=exclude_original), factor, cfg,
                         **kw)


def compose(*interventions: Interventions) -> Interventions:
    """Applies interventions in order: factors multiply when positions and site agree (and none uses an
    explicit mask); otherwise the result is a tuple of interventions, applied in order by `site_edits`."""
    parts = [p for iv in interventions for p in ((iv,) if isinstance(iv, Intervention) else iv)]
    if not parts:
        raise ValueError("compose needs at least one intervention")
    first = parts[0]
    if all(p.positions == first.positions != "mask" and p.site == first.site for p in parts):
        factor = functools.reduce(lambda a, b: a * b, [p.factor for p in parts])
        return Intervention(factor=factor, positions=first.positions, site=first.site)
    return tuple(parts)


def stack(interventions: Sequence[Intervention]) -> Intervention:
    """One Intervention with a leading axis N (for `sweep`); all must share positions and site."""
    first = interventions[0]
    if any(iv.positions != first.positions or iv.site != first.site for iv in interventions):
        raise ValueError("stacked interventions must share positions and site")
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *interventions)


# ---- effects: answer probabilities -------------------------------------------------------------------

class AnswerProbability(NamedTuple):
    """per_token: P(y_k | prompt, y_<k) [..., K]; first: P(y_1 | prompt); joint: the product over k."""

    per_token: Float[Array, "... K"]
    first: Float[Array, ...]
    joint: Float[Array, ...]


class Effect(NamedTuple):
    before: AnswerProbability
    after: AnswerProbability


def teacher_forced_rows(prompt: Sequence[int], target: Sequence[int], pad_id: int = 0):
    """K right-padded rows of prompt + y_1..y_{K-1}: row k has prompt + y_<k real, so its last real token is
    the one predicting y_k. Returns (tokens [K, T], valid [K, T], read [K, 1], targets [K]) as numpy."""
    prompt, target = [int(t) for t in prompt], [int(t) for t in target]
    if not prompt:
        raise ValueError("the prompt is empty")
    if not target:
        raise ValueError("the target answer has no tokens")
    text = prompt + target[:-1]
    length = bucket_length(len(text))
    tokens = np.full((len(target), length), pad_id, np.int32)
    tokens[:, : len(text)] = text
    real = len(prompt) + np.arange(len(target))  # real tokens per row
    valid = np.arange(length)[None, :] < real[:, None]
    return tokens, valid, (real - 1)[:, None].astype(np.int32), np.asarray(target, np.int32)


def _target_probs(params, cfg, tokens, valid, read, targets, intervention) -> Float[Array, K]:
    logits = forward(params, tokens, cfg, valid=valid, edits=site_edits(intervention, valid),
                     logits_at=read).logits[:, 0]  # [K, V]
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(probs, targets[:, None], axis=1)[:, 0]


_target_probs_jit = jax.jit(_target_probs, static_argnames=("cfg",))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _target_probs_sweep(params, cfg, tokens, valid, read, targets, stacked):
    return jax.vmap(lambda iv: _target_probs(params, cfg, tokens, valid, read, targets, iv))(stacked)


def _summarise(per_token) -> AnswerProbability:
    return AnswerProbability(per_token=per_token, first=per_token[..., 0], joint=jnp.prod(per_token, axis=-1))


def answer_probability(params: Params, cfg: ModelConfig, prompt: Sequence[int], target: Sequence[int],
                       intervention: Interventions | None = None) -> AnswerProbability:
    """P(target | prompt), teacher-forced, under an optional intervention (module docstring)."""
    check_token_ids([prompt, target], cfg.vocab_size, where="answer_probability (prompt, target)")
    rows = teacher_forced_rows(prompt, target, cfg.pad_token_id or 0)
    return _summarise(_target_probs_jit(params, cfg, *map(jnp.asarray, rows), intervention))


def intervention_effect(params: Params, cfg: ModelConfig, prompt, target, intervention: Interventions) -> Effect:
    """P(target) before and after the intervention."""
    check_token_ids([prompt, target], cfg.vocab_size, where="intervention_effect (prompt, target)")
    return Effect(answer_probability(params, cfg, prompt, target),
                  answer_probability(params, cfg, prompt, target, intervention))


def sweep(params: Params, cfg: ModelConfig, prompt, target, stacked: Intervention, *, mesh=None,
          rule: str | None = None) -> AnswerProbability:
    """P(target) under each of N stacked interventions ([N, ...] results): one compiled, vmapped call.

    mesh: a ("data", "model") `jaxkn.sharding` mesh: the N interventions are split over "data" (padded, then
    dropped) and results come back as numpy. rule: places `params` on `mesh` under this rule; None keeps
    params already placed on `mesh` and replicates others.
    """
    check_token_ids([prompt, target], cfg.vocab_size, where="sweep (prompt, target)")
    rows = teacher_forced_rows(prompt, target, cfg.pad_token_id or 0)
    if mesh is None:
        if rule is not None:
            raise ValueError(f"rule={rule!r} needs a mesh: pass mesh=jaxkn.sharding.make_mesh(...)")
        return _summarise(_target_probs_sweep(params, cfg, *map(jnp.asarray, rows), stacked))
    from jaxkn.sharding import place_params, shard_batch, unpad

    placed, n = shard_batch(stacked, mesh)
    per_token = _target_probs_sweep(place_params(params, cfg, mesh, rule), cfg, *map(jnp.asarray, rows), placed)
    return _summarise(unpad(per_token, n))


def sweep_factors(params: Params, cfg: ModelConfig, prompt, target, neurons, factors: Sequence[float], *,
                  positions="last", site: str = "product", mesh=None, rule: str | None = None
                  ) -> AnswerProbability:
    """P(target) with `neurons` scaled by each factor in `factors` ([N] results); `mesh`, `rule`: `sweep`."""
    check_all_finite(factors, what="sweep_factors factors")
    pairs = neuron_array(neurons, cfg.n_layers, cfg.d_ff)
    chosen = np.zeros((cfg.n_layers, cfg.d_ff), bool)
    chosen[pairs[:, 0], pairs[:, 1]] = True
    factors = jnp.asarray(factors, jnp.float32)
    stacked_factor = jnp.where(jnp.asarray(chosen)[None], factors[:, None, None], jnp.float32(1.0))
    positions, mask = _positions(positions)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (len(factors), *mask.shape))
    stacked = Intervention(factor=stacked_factor, mask=mask, positions=positions, site=site)
    return sweep(params, cfg, prompt, target, stacked, mesh=mesh, rule=rule)


def sweep_sets(params: Params, cfg: ModelConfig, prompt, target, neuron_sets: Sequence, factor: float, *,
               positions="last", site: str = "product", mesh=None, rule: str | None = None
               ) -> AnswerProbability:
    """P(target) with each neuron set in turn scaled by `factor` ([N] results, N = len(neuron_sets));
    `mesh`, `rule`: `sweep`."""
    return sweep(params, cfg, prompt, target, stack(
        [scale_neurons(s, factor, cfg, positions=positions, site=site) for s in neuron_sets]), mesh=mesh, rule=rule)


# ---- effects: generation -----------------------------------------------------------------------------

def generate_under(params: Params, cfg: ModelConfig, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   intervention: Intervention | None = None, *, mode: str | None = None,
                   stop_ids: Sequence[int] = (), capture: str | None = None) -> Generation:
    """Greedy decoding with the intervention applied at every decoding step (`jaxkn.generate`).

    mode: "last" (default for positions "last"), "cached", or "all" (default for positions "all"); see
    `jaxkn.generate` for what each means.
    """
    if intervention is None:
        return generate(params, cfg, prompts, max_new_tokens, stop_ids=stop_ids, capture=capture)
    if not isinstance(intervention, Intervention):
        raise ValueError("generation takes one Intervention (one factor per neuron at one site); compose "
                         "interventions with matching positions and site first")
    scale = intervention.to_scale()  # rejects explicit position masks
    mode = mode or intervention.positions
    if mode not in MODES:
        raise ValueError(f"unknown decoding mode {mode!r}; choose from {MODES}")
    return generate(params, cfg, prompts, max_new_tokens, stop_ids=stop_ids, scale=scale, mode=mode,
                    site=intervention.site, capture=capture)


__all__ = [
    "POSITIONS", "Intervention", "AnswerProbability", "Effect", "neuron_array", "per_layer_counts",
    "random_neurons", "scale_neurons", "enhance", "suppress", "random_control", "compose", "stack",
    "site_edits", "teacher_forced_rows", "answer_probability", "intervention_effect", "sweep",
    "sweep_factors", "sweep_sets", "generate_under",
]
