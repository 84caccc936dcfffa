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

Controls that can fail (revision 2026-12-01):
- `KNSet`: a set with its abar, ready to read; `read_R` / `read_kn_score` read one, `read_many` reads G sets
  from one capture in one gather ([..., G]): a wrong-fact null or 100 matched random draws (`jaxkn.nulls`).
- `specific_score`: D(x) = R_own(x) - mean_g R_g(x) over a wrong-fact null. `single_hop_specific_level`
  (leave-one-out), `two_hop_specific_level` (max and mean over generated positions), `recalled_specific`
  (two-hop D >= tau * single-hop D, defined only where single-hop D > 0; `specific_share` counts the skipped).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

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


def set_scores(acts: Float[np.ndarray, "... L F"], neurons, abar) -> dict[str, np.ndarray]:
    """R and the paper's score of one neuron set on captured activations, in float64 on the host.

    acts: [..., L, F]; neurons: [k, 2] (layer, index), k >= 1; abar: [k], the set's mean activations over the
    fact's queries, in the order of `neurons`. Returns {"R": [...], "paper": [...]}: reading a set from one
    capture costs a gather, so any number of sets (controls, nulls) can be read from the same activations.
    """
    omega = np.asarray(neurons, np.int64).reshape(-1, 2)
    if len(omega) == 0:
        raise ValueError("an empty neuron set has no score")
    abar = np.asarray(abar, np.float64)
    if abar.shape != (len(omega),):
        raise ValueError(f"abar has shape {abar.shape} for {len(omega)} neurons")
    values = np.asarray(acts, np.float64)[..., omega[:, 0], omega[:, 1]]  # [..., k]
    return {"R": np.sum(np.sign(abar) * values, axis=-1) / np.sum(np.abs(abar)), "paper": values.mean(axis=-1)}


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
    host = np.asarray(query_acts, np.float64)  # abar of the other queries, averaged in float64
    per_query = np.full(n_queries, np.nan)
    for j, omega in enumerate(neuron_sets_loo):
        if len(omega) == 0:
            continue  # an empty refined set is data (METHOD §4): the fold is skipped and counted
        abar_rest = np.delete(host, j, axis=0).mean(axis=0)
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



# ---- readable KN sets, many at once, and the specific score D (METHOD §5, revision 2026-12-01) ---------

@dataclasses.dataclass(frozen=True)
class KNSet:
    """A knowledge-neuron set ready to be read: neurons [k, 2] and their abar [k].

    Attributes:
      neurons: distinct (layer, index) pairs, int [k, 2], k >= 1 (`from_abar` sorts them). An empty refined set
        is data: the caller skips the fact or fold and counts it, it never builds a KNSet.
      abar: each neuron's mean activation at the read position over the fact's single-hop queries, float [k];
        sum |abar| > 0, else R (which divides by it) is undefined.
    """

    neurons: Int[np.ndarray, "k 2"]
    abar: Float[np.ndarray, "k"]

    def __post_init__(self):
        neurons = np.asarray(self.neurons)
        abar = np.asarray(self.abar, np.float32)
        if neurons.ndim != 2 or neurons.shape[1] != 2 or neurons.shape[0] == 0 \
                or not np.issubdtype(neurons.dtype, np.integer):
            raise ValueError(f"KNSet.neurons must be (layer, index) pairs, int [k, 2] with k >= 1, got shape "
                             f"{neurons.shape} and dtype {neurons.dtype}; skip and count a fact whose set is empty")
        if abar.shape != (neurons.shape[0],):
            raise ValueError(f"KNSet.abar has shape {abar.shape}; it needs one value per neuron, ({len(neurons)},)")
        if len(np.unique(neurons, axis=0)) != len(neurons):
            raise ValueError("KNSet.neurons has a neuron twice; build it with KNSet.from_abar (it de-duplicates)")
        if not np.all(np.isfinite(abar)) or not np.sum(np.abs(abar)) > 0:
            raise ValueError("KNSet.abar must be finite with sum |abar| > 0 (R divides by it); a set whose neurons "
                             "never fire on the fact's queries cannot be read")
        object.__setattr__(self, "neurons", neurons.astype(np.int64))
        object.__setattr__(self, "abar", abar)

    @classmethod
    def from_abar(cls, neurons, abar: Float[Array, "L F"]) -> KNSet:
        """The set `neurons` with abar read from a full abar [L, F] (e.g. `mean_activation` of the queries)."""
        abar = np.asarray(abar, np.float32)
        pairs = neuron_array(neurons, *abar.shape)
        return cls(pairs, abar[pairs[:, 0], pairs[:, 1]])

    @classmethod
    def from_queries(cls, neurons, query_acts: Float[Array, "J L F"]) -> KNSet:
        """The set `neurons` with abar = the mean over the fact's single-hop query activations [J, L, F]."""
        return cls.from_abar(neurons, mean_activation(query_acts))

    def __len__(self) -> int:
        return len(self.neurons)


def _check_dims(acts, sets: Sequence[KNSet]) -> None:
    n_layers, d_ff = acts.shape[-2:]
    for g, kn in enumerate(sets):
        if kn.neurons[:, 0].max() >= n_layers or kn.neurons[:, 1].max() >= d_ff:
            raise ValueError(f"KN set {g} names a neuron outside activations of shape [..., {n_layers}, {d_ff}]")


def _stack(sets: Sequence[KNSet]) -> tuple[np.ndarray, ...]:
    """Sets padded to one width K: layer, index, sign(abar) and a real-neuron mask [G, K], and sum |abar| [G].
    Padding reads neuron (0, 0) with weight 0, so it adds nothing."""
    width = max(len(kn) for kn in sets)
    layer = np.zeros((len(sets), width), np.int32)
    index = np.zeros((len(sets), width), np.int32)
    sign = np.zeros((len(sets), width), np.float32)
    real = np.zeros((len(sets), width), np.float32)
    for g, kn in enumerate(sets):
        layer[g, :len(kn)], index[g, :len(kn)] = kn.neurons[:, 0], kn.neurons[:, 1]
        sign[g, :len(kn)], real[g, :len(kn)] = np.sign(kn.abar), 1.0
    denom = np.array([np.sum(np.abs(kn.abar)) for kn in sets], np.float32)
    return layer, index, sign, real, denom


def read_many(acts: Float[Array, "... L F"], sets: Sequence[KNSet], *, kind: str = "relative"
              ) -> Float[Array, "... G"]:
    """R (kind="relative") or the paper's KN score (kind="paper") of G sets from one capture, [..., G].

    One gather of [..., G, K] activations and a weighted sum: reading many sets (a wrong-fact null, 100
    matched random draws) costs nothing once a prompt's [L, F] activations are captured.
    """
    if kind not in SCORES:
        raise ValueError(f"unknown score {kind!r}; choose from {SCORES}")
    if not len(sets):
        raise ValueError("read_many needs at least one KN set")
    acts = jnp.asarray(acts, jnp.float32)
    _check_dims(acts, sets)
    layer, index, sign, real, denom = _stack(sets)
    values = acts[..., layer, index]  # [..., G, K]
    if kind == "paper":
        return jnp.sum(values * real, axis=-1) / jnp.sum(real, axis=-1)
    return jnp.sum(values * sign, axis=-1) / denom


def read_R(acts: Float[Array, "... L F"], kn: KNSet) -> Float[Array, "..."]:
    """R = sum sign(abar) a / sum |abar| over the set (METHOD §5), [...]; equals `relative_score`."""
    return read_many(acts, [kn])[..., 0]


def read_kn_score(acts: Float[Array, "... L F"], kn: KNSet) -> Float[Array, "..."]:
    """The paper's KN score of the set (mean activation), [...]; equals `kn_score`."""
    return read_many(acts, [kn], kind="paper")[..., 0]


def specific_score(acts: Float[Array, "... L F"], own: KNSet, null: Sequence[KNSet]) -> Float[Array, "..."]:
    """D(x) = R_own(x) - mean over the wrong-fact null of R_g(x) (METHOD §5), [...]."""
    if not len(null):
        raise ValueError("the specific score needs a wrong-fact null: pass at least one other fact's KNSet "
                         "(jaxkn.nulls.wrong_fact_keys picks them)")
    reads = read_many(acts, [own, *null])  # [..., 1 + G]
    return reads[..., 0] - jnp.mean(reads[..., 1:], axis=-1)


class SpecificSingleHop(NamedTuple):
    """level: mean of per_query (D) over the folds with a non-empty set; per_query, own, null_mean: [J] (D, R_own
    and the null's mean R on query j; NaN where the fold's set is empty); n_skipped: folds skipped."""

    level: float
    per_query: np.ndarray
    own: np.ndarray
    null_mean: np.ndarray
    n_skipped: int


def single_hop_specific_level(query_acts: Float[Array, "J L F"], neuron_sets_loo: Sequence,
                              null: Sequence[KNSet]) -> SpecificSingleHop:
    """Out-of-sample single-hop level of D: the mean over queries j of D(x_j).

    What is held out for query j: the own set is `neuron_sets_loo[j]` (selected without query j, as for
    `single_hop_level`) and its abar is the mean over the other J - 1 queries. The null sets are read as they
    are (their neurons and abar from the null facts' own queries): those never include query j, so they are
    out of sample already and one reading [J, G] serves every fold.

    Raises ValueError for fewer than 2 queries (the leave-one-out fold would be empty) or a set count != J.
    """
    query_acts = jnp.asarray(query_acts, jnp.float32)
    n_queries = query_acts.shape[0]
    if n_queries < 2:
        raise ValueError(f"a hop needs at least 2 single-hop queries for the leave-one-out specific level, got "
                         f"{n_queries}: fold j's set and abar come from the other queries, and there are none")
    if len(neuron_sets_loo) != n_queries:
        raise ValueError(f"got {len(neuron_sets_loo)} leave-one-out neuron sets for {n_queries} queries")
    if not len(null):
        raise ValueError("the specific level needs a wrong-fact null: pass at least one other fact's KNSet")
    null_mean = np.asarray(jnp.mean(read_many(query_acts, null), axis=-1), np.float64)  # [J]
    total = jnp.sum(query_acts, axis=0)
    own = np.full(n_queries, np.nan)
    for j, omega in enumerate(neuron_sets_loo):
        if len(omega) == 0:
            continue  # an empty refined set is data (METHOD §4): the fold is skipped and counted
        own[j] = float(read_R(query_acts[j], KNSet.from_abar(omega, (total - query_acts[j]) / (n_queries - 1))))
    per_query = own - np.where(np.isnan(own), np.nan, null_mean)
    skipped = int(np.isnan(per_query).sum())
    level = float(np.nanmean(per_query)) if skipped < n_queries else float("nan")
    return SpecificSingleHop(level, per_query, own, np.where(np.isnan(own), np.nan, null_mean), skipped)


class TwoHopSpecific(NamedTuple):
    """D on the two-hop question: max and mean over generated positions (both the one value without CoT);
    per_position: D at each generated position ([N], None without generation)."""

    max: float
    mean: float
    per_position: np.ndarray | None

    def level(self, summary: str = "max") -> float:
        if summary not in SUMMARIES:
            raise ValueError(f"unknown summary {summary!r}; choose from {SUMMARIES}")
        return self.max if summary == "max" else self.mean


def two_hop_specific_level(acts: Float[Array, "L F"] | Float[Array, "N L F"], own: KNSet, null: Sequence[KNSet],
                           *, valid=None) -> TwoHopSpecific:
    """Two-hop specific level: D with the own set from all of the hop's queries.

    acts: [L, F] at the last prompt token (no CoT), or [N, L, F] at each generated position (CoT), with
    `valid` [N] marking real positions; both summaries (max, mean) are returned.
    """
    acts = jnp.asarray(acts)
    values = np.asarray(specific_score(acts, own, null), np.float64)
    if acts.ndim == 2:
        return TwoHopSpecific(float(values), float(values), None)
    valid = np.ones(values.shape, bool) if valid is None else np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("no generated position to read: every position is marked invalid")
    picked = values[valid]
    return TwoHopSpecific(float(picked.max()), float(picked.mean()), values)


def recalled_specific(two_hop_d, single_d, tau: float = 0.5) -> np.ndarray:
    """Recalled-specific := two-hop D >= tau * single-hop D, element-wise, as float: 1.0 / 0.0, and NaN where
    it is undefined (single-hop D <= 0 or NaN: the fact shows no specific signal; skipped and counted, e.g.
    with `specific_share`)."""
    two, single = np.asarray(two_hop_d, np.float64), np.asarray(single_d, np.float64)
    defined = (single > 0) & np.isfinite(two)
    return np.where(defined, (two >= tau * single).astype(np.float64), np.nan)


class SpecificShare(NamedTuple):
    """share: recalled / defined (NaN when nothing is defined); the counts it comes from."""

    share: float
    recalled: int
    defined: int
    skipped: int


def specific_share(two_hop_d, single_d, tau: float = 0.5) -> SpecificShare:
    """Share of hops recalled-specific at tau, over the hops where it is defined, with the skipped count."""
    flags = np.atleast_1d(recalled_specific(two_hop_d, single_d, tau))
    defined = np.isfinite(flags)
    hits, n = int(flags[defined].sum()), int(defined.sum())
    return SpecificShare(hits / n if n else float("nan"), hits, n, int((~defined).sum()))


def specific_tau_curve(two_hop_d, single_d, taus: Sequence[float] = DEFAULT_TAUS):
    """(taus [n], shares [n], defined, skipped): `specific_share` over tau; the counts do not depend on tau."""
    taus = np.asarray(taus, np.float64)
    shares = [specific_share(two_hop_d, single_d, t) for t in taus]
    return taus, np.array([s.share for s in shares]), shares[0].defined, shares[0].skipped

__all__ = [
    "SCORES", "SUMMARIES", "DEFAULT_TAUS", "site_activations", "GeneratedActivations", "generated_activations",
    "mean_activation", "kn_score", "relative_score", "score", "set_scores", "SingleHopLevel", "single_hop_level",
    "TwoHopLevel", "two_hop_level", "recalled", "tau_curve", "HopRecall", "hop_recall",
    "KNSet", "read_many", "read_R", "read_kn_score", "specific_score", "SpecificSingleHop",
    "single_hop_specific_level", "TwoHopSpecific", "two_hop_specific_level", "recalled_specific",
    "SpecificShare", "specific_share", "specific_tau_curve",
]
