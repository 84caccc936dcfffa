"""KN Score: did the model recall a fact? (METHOD.md §5)

Activations are read at the neuron site of attribution (default "product") at the **read position**: the last
prompt token (it predicts the answer's first token), or, for generated text, each position that predicted a
generated token. Arrays of activations end in [L, F]; a neuron set is a sequence of (layer, index) pairs.

- `kn_score`: the paper's score, the mean activation over the set.
- `relative_score` (**default**): sum_{(l,i) in omega} sign(abar_li) * a_li / sum_{omega} |abar_li|, with abar
  the neuron's mean activation over the fact's single-hop queries (`mean_activation`). It is 1 on the queries'
  own average; NaN when every abar of the set is 0.
- `single_hop_level`: out of sample, leave-one-out: for query j the set omega_j and abar_j come from the other
  queries only (the caller passes the per-fold sets, e.g. from `jaxkn.neurons`), R is read on query j, and the
  level is the mean over j. Folds with an empty set are skipped and counted.
- `two_hop_level`: R(omega) with omega and abar from all of a hop's queries, at the last prompt token (no CoT)
  or at each generated position, summarised by the max (**default**) or the mean.
- `recalled`: two-hop level >= tau * single-hop level, **default** tau = 0.5; `tau_curve` gives the shares
  over tau in 0.25..1.0.
- `hop_recall`: all of the above for one hop, with the same statistics for a seeded random control set of the
  same count per layer beside them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from jaxkn.config import ModelConfig
from jaxkn.generate import Generation, left_pad
from jaxkn.interventions import Intervention, generate_under, neuron_array, random_neurons, site_edits
from jaxkn.model import Params, forward
from jaxkn.validation import check_token_ids

SCORES = ("relative", "paper")
SUMMARIES = ("max", "mean")
DEFAULT_TAUS = tuple(np.round(np.arange(0.25, 1.0001, 0.05), 2))


# ---- reading activations -----------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("cfg", "site"))
def _read_site(params, cfg, tokens, valid, at, site, intervention):
    out = forward(params, tokens, cfg, valid=valid, edits=site_edits(intervention, valid), capture=(site,),
                  capture_at=at, return_logits=False)
    return jnp.moveaxis(out.captures[site], 0, 2)  # [L, B, P, F] -> [B, P, L, F]


def site_activations(params: Params, cfg: ModelConfig, prompts: Sequence[Sequence[int]], *,
                     site: str = "product", at: str | Sequence[int] = "last",
                     intervention: Intervention | None = None) -> Float[Array, "B L F"]:
    """Activations of every neuron at one position of each prompt, [B, L, F].

    at: "last" (the last prompt token, the read position) or one index per prompt (negative counts from
    the end). Prompts are left-padded to a bucketed length; a row's result does not depend on the batch.
    """
    check_token_ids(prompts, cfg.vocab_size, where="site_activations")
    tokens, valid = left_pad(prompts, cfg.pad_token_id or 0)
    length = tokens.shape[1]
    if isinstance(at, str):
        if at != "last":
            raise ValueError(f"unknown read position {at!r}; use 'last' or one index per prompt")
        index = np.full(len(prompts), length - 1)
    else:
        if len(at) != len(prompts):
            raise ValueError(f"got {len(at)} read positions for {len(prompts)} prompts")
        index = []
        for p, i in zip(prompts, at):
            if not -len(p) <= i < len(p):
                raise ValueError(f"read position {i} is outside a prompt of {len(p)} tokens")
            index.append(length - len(p) + (i % len(p)))
    at_arr = jnp.asarray(np.asarray(index, np.int32)[:, None])
    return _read_site(params, cfg, jnp.asarray(tokens), jnp.asarray(valid), at_arr, site, intervention)[:, 0]


class GeneratedActivations(NamedTuple):
    """generation: the decoded tokens; acts: [B, N, L, F] at the position predicting each generated token;
    valid: [B, N], False after a row stopped."""

    generation: Generation
    acts: Float[Array, "B N L F"]
    valid: Bool[Array, "B N"]


def generated_activations(params: Params, cfg: ModelConfig, prompts: Sequence[Sequence[int]],
                          max_new_tokens: int, *, site: str = "product", stop_ids: Sequence[int] = (),
                          intervention: Intervention | None = None, mode: str | None = None
                          ) -> GeneratedActivations:
    """Greedy decoding (KV cache) with the site read at every generated position (for CoT scores)."""
    gen = generate_under(params, cfg, prompts, max_new_tokens, intervention, mode=mode, stop_ids=stop_ids,
                         capture=site)
    acts = jnp.moveaxis(gen.site, 2, 0)  # [N, L, B, F] -> [B, N, L, F]
    return GeneratedActivations(gen, acts, jnp.asarray(np.asarray(gen.tokens) >= 0))


# ---- scores ------------------------------------------------------------------------------------------

def _gather(acts: Float[Array, "... L F"], neurons) -> tuple[Array, np.ndarray]:
    pairs = neuron_array(neurons, acts.shape[-2], acts.shape[-1])
    return jnp.asarray(acts)[..., pairs[:, 0], pairs[:, 1]], pairs  # [..., n]


def mean_activation(query_acts: Float[Array, "J L F"]) -> Float[Array, "L F"]:
    """abar: each neuron's mean activation over a fact's single-hop queries."""
    return jnp.mean(jnp.asarray(query_acts, jnp.float32), axis=0)


def kn_score(acts: Float[Array, "... L F"], neurons) -> Float[Array, ...]:
    """The paper's KN Score: mean activation over the set."""
    values, _ = _gather(acts, neurons)
    return jnp.mean(values.astype(jnp.float32), axis=-1)


def relative_score(acts: Float[Array, "... L F"], neurons, abar: Float[Array, "L F"]) -> Float[Array, ...]:
    """The default score R: sign(abar)-weighted sum of activations over sum |abar| (module docstring)."""
    values, pairs = _gather(acts, neurons)
    ref = jnp.asarray(abar, jnp.float32)[pairs[:, 0], pairs[:, 1]]
    return jnp.sum(jnp.sign(ref) * values.astype(jnp.float32), axis=-1) / jnp.sum(jnp.abs(ref))


def score(acts, neurons, abar=None, kind: str = "relative"):
    """`relative_score` (needs abar) or the paper's `kn_score`, by name."""
    if kind not in SCORES:
        raise ValueError(f"unknown score {kind!r}; choose from {SCORES}")
    if kind == "paper":
        return kn_score(acts, neurons)
    if abar is None:
        raise ValueError("the relative score needs abar (mean_activation of the hop's single-hop queries)")
    return relative_score(acts, neurons, abar)


class SingleHopLevel(NamedTuple):
    """level: mean of per_query over the folds with a non-empty set; per_query: [J] (NaN where skipped)."""

    level: float
    per_query: np.ndarray
    n_skipped: int


def single_hop_level(query_acts: Float[Array, "J L F"], neuron_sets_loo: Sequence, *,
                     kind: str = "relative") -> SingleHopLevel:
    """Out-of-sample single-hop level: fold j reads set `neuron_sets_loo[j]` (selected without query j),
    with abar from the other queries, on query j."""
    query_acts = jnp.asarray(query_acts, jnp.float32)
    n_queries = query_acts.shape[0]
    if n_queries < 2:
        raise ValueError(f"leave-one-out needs at least 2 single-hop queries, got {n_queries}")
    if len(neuron_sets_loo) != n_queries:
        raise ValueError(f"got {len(neuron_sets_loo)} leave-one-out neuron sets for {n_queries} queries")
    total = jnp.sum(query_acts, axis=0)
    per_query = np.full(n_queries, np.nan)
    for j, omega in enumerate(neuron_sets_loo):
        if len(omega) == 0:
            continue  # an empty refined set is data (METHOD §4): the fold is skipped and counted
        abar_rest = (total - query_acts[j]) / (n_queries - 1)
        per_query[j] = float(score(query_acts[j], omega, abar_rest, kind))
    skipped = int(np.isnan(per_query).sum())
    level = float(np.nanmean(per_query)) if skipped < n_queries else float("nan")
    return SingleHopLevel(level, per_query, skipped)


class TwoHopLevel(NamedTuple):
    """level: the summary; per_position: R at each generated position ([N], None without generation)."""

    level: float
    per_position: np.ndarray | None


def two_hop_level(acts: Float[Array, "L F"] | Float[Array, "N L F"], neurons, abar=None, *,
                  kind: str = "relative", summary: str = "max", valid=None) -> TwoHopLevel:
    """R on the two-hop question: acts [L, F] at the last prompt token (no CoT), or [N, L, F] at each
    generated position (`valid` [N] marks real ones), summarised by `summary` ("max" or "mean")."""
    if summary not in SUMMARIES:
        raise ValueError(f"unknown summary {summary!r}; choose from {SUMMARIES}")
    acts = jnp.asarray(acts)
    values = np.asarray(score(acts, neurons, abar, kind), np.float64)
    if acts.ndim == 2:
        return TwoHopLevel(float(values), None)
    valid = np.ones(values.shape, bool) if valid is None else np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("no generated position to read: every position is marked invalid")
    picked = values[valid]
    return TwoHopLevel(float(picked.max() if summary == "max" else picked.mean()), values)


def recalled(two_hop_level, single_level, tau: float = 0.5):
    """Recalled(hop) := two-hop level >= tau * single-hop level (element-wise on arrays)."""
    return np.asarray(two_hop_level) >= tau * np.asarray(single_level)


def tau_curve(two_hop_levels, single_levels, taus: Sequence[float] = DEFAULT_TAUS):
    """Share of hops recalled at each tau: (taus [n], shares [n]); NaN levels count as not recalled."""
    two, single = np.asarray(two_hop_levels, np.float64), np.asarray(single_levels, np.float64)
    taus = np.asarray(taus, np.float64)
    shares = np.array([np.mean(recalled(two, single, t)) for t in taus])
    return taus, shares


class HopRecall(NamedTuple):
    """One hop's statistics, for the knowledge neurons and for the random control beside them."""

    single: SingleHopLevel
    two_hop: TwoHopLevel
    recalled: bool
    control_single: SingleHopLevel
    control_two_hop: TwoHopLevel
    control_recalled: bool
    control_neurons: np.ndarray


def hop_recall(query_acts: Float[Array, "J L F"], neuron_sets_loo: Sequence, neurons, two_hop_acts, *,
               kind: str = "relative", summary: str = "max", tau: float = 0.5, seed=0,
               valid=None) -> HopRecall:
    """Single-hop level, two-hop level and Recalled for one hop, with a seeded random control.

    The control draws, for every fold and for the full set, a random set with the same count per layer
    (seed (seed, j) for fold j and (seed, J) for the full set), and computes the same statistics.
    """
    query_acts = jnp.asarray(query_acts, jnp.float32)
    shape = query_acts.shape[-2:]
    n_queries = query_acts.shape[0]
    abar = mean_activation(query_acts)
    single = single_hop_level(query_acts, neuron_sets_loo, kind=kind)
    two = two_hop_level(two_hop_acts, neurons, abar, kind=kind, summary=summary, valid=valid)
    control_loo = [random_neurons(s, shape, (seed, j)) if len(s) else [] for j, s in enumerate(neuron_sets_loo)]
    control = random_neurons(neurons, shape, (seed, n_queries))
    c_single = single_hop_level(query_acts, control_loo, kind=kind)
    c_two = two_hop_level(two_hop_acts, control, abar, kind=kind, summary=summary, valid=valid)
    return HopRecall(single, two, bool(recalled(two.level, single.level, tau)), c_single, c_two,
                     bool(recalled(c_two.level, c_single.level, tau)), control)


__all__ = [
    "SCORES", "SUMMARIES", "DEFAULT_TAUS", "site_activations", "GeneratedActivations", "generated_activations",
    "mean_activation", "kn_score", "relative_score", "score", "SingleHopLevel", "single_hop_level",
    "TwoHopLevel", "two_hop_level", "recalled", "tau_curve", "HopRecall", "hop_recall",
]
