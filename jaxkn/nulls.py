"""Controls that can fail (METHOD.md §5, revision 2026-12-01): which sets a KN statistic is compared with.

- **Wrong-fact null** (`wrong_fact_keys`): the KN sets, with their own abar, of other studied facts whose answer
  differs, same relation first. Reading a set is free once a prompt's [L, F] activations are captured
  (`jaxkn.recall.read_many`), so scores use all of them or at least 20; interventions at least 3.
- **Matched random null** (`matched_random_sets`): per knowledge neuron, a random neuron of the same layer whose
  |abar| on the fact's queries lies in the same decile of that layer's |abar|; at least 100 draws for scores, at
  least 3 for interventions (the caller chooses n_draws). `matched_random_knsets` gives them as KNSets read
  with the fact's own abar.
- **Same-count random** (`jaxkn.interventions.random_neurons`, unchanged): same count per layer, seeded. The
  "both hops" control is drawn for the **union** of the two sets: `random_neurons(union([kn1, kn2]), ...)` has
  the union's count per layer (a neuron in both sets is counted once, as scaling it once is what the "both"
  condition does).

Determinism: every choice here depends only on the inputs and the seed (numpy's `default_rng`, seeded by an int
or a tuple of ints), never on Python's `hash()` or on set iteration order, so the same input gives the same
output in every process of a multi-host run.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from jaxtyping import Float, Int

from jaxkn.data.judge import normalize
from jaxkn.interventions import neuron_array
from jaxkn.recall import KNSet

N_DECILES = 10


# ---- wrong-fact null -----------------------------------------------------------------------------------

def wrong_fact_keys(own: Hashable, facts: Mapping[Hashable, tuple[str, str]], *, n: int | None = None,
                    n_min: int = 20, seed=0) -> list:
    """The other studied facts whose answer differs from `own`'s, same relation first.

    Args:
      own: the key of the fact under test (it must be in `facts`).
      facts: key -> (answer, relation) for every studied fact. Answers are compared after the judge's
        `normalize` (case, accents, punctuation, articles), so "Paris" and "paris" are the same answer.
      n: None (default) takes every candidate; an int takes a seeded sample of n (n >= n_min), filled from
        the same relation first and from the other relations after.
      n_min: the fewest null facts the statistic accepts (20 for scores, 3 for interventions, METHOD §5).
      seed: an int or a tuple of ints (e.g. (seed, fact index)).
    Returns:
      keys: the same-relation candidates, then the others; within each group in the order of `repr(key)`.
    Raises:
      ValueError: `own` is not in `facts`, n < n_min, or fewer than n_min candidates exist (the message says
        how many there are; pass a smaller n_min to accept that).
    """
    if own not in facts:
        raise ValueError(f"fact {own!r} is not among the studied facts")
    if n is not None and n < n_min:
        raise ValueError(f"asked for {n} null facts but n_min={n_min}; ask for at least n_min")
    answer, relation = facts[own]
    answer = normalize(answer)
    candidates = sorted((k for k, (a, _) in facts.items() if k != own and normalize(a) != answer), key=repr)
    same = [k for k in candidates if facts[k][1] == relation]
    other = [k for k in candidates if facts[k][1] != relation]
    if len(candidates) < n_min:
        raise ValueError(f"only {len(candidates)} other facts have an answer different from {own!r}'s, the "
                         f"wrong-fact null needs n_min={n_min}; study more facts or pass a smaller n_min")
    if n is None or n >= len(candidates):
        return same + other
    rng = np.random.default_rng(seed)
    take_same = min(n, len(same))
    picked_same = sorted(rng.choice(len(same), take_same, replace=False)) if take_same else []
    picked_other = sorted(rng.choice(len(other), n - take_same, replace=False)) if n > take_same else []
    return [same[i] for i in picked_same] + [other[i] for i in picked_other]


# ---- matched random null -------------------------------------------------------------------------------

def layer_deciles(abs_abar: Float[np.ndarray, "L F"]) -> Int[np.ndarray, "L F"]:
    """Decile (0..9) of each neuron's |abar| within its layer, by rank: ties are broken by neuron index, so
    every decile of a layer holds F/10 neurons (up to rounding) even where many |abar| are equal."""
    abs_abar = np.abs(np.asarray(abs_abar, np.float64))
    ranks = np.argsort(np.argsort(abs_abar, axis=-1, kind="stable"), axis=-1, kind="stable")
    return (ranks * N_DECILES) // abs_abar.shape[-1]


def matched_random_sets(neurons, abs_abar: Float[np.ndarray, "L F"], n_draws: int, seed=0
                        ) -> Int[np.ndarray, "n_draws k 2"]:
    """Matched random draws: per KN, a random neuron of the same layer and the same |abar| decile.

    Args:
      neurons: the fact's KN set, (layer, index) pairs (validated, de-duplicated and sorted, as
        `jaxkn.interventions.neuron_array` does).
      abs_abar: |abar| of this fact's queries over every neuron, [L, F] (signed abar works too: its absolute
        value is taken).
      n_draws: how many random sets (>= 100 for scores, >= 3 for interventions).
      seed: an int or a tuple of ints.
    Returns:
      int [n_draws, k, 2]: draw d's neuron m replaces KN m of the sorted set (same layer, same decile). Within a
      draw the neurons are distinct; no draw contains a neuron of the KN set itself.
    Raises:
      ValueError: n_draws < 1, or a (layer, decile) cell has fewer non-KN neurons than KNs to match there.
    """
    abs_abar = np.abs(np.asarray(abs_abar, np.float64))
    if abs_abar.ndim != 2:
        raise ValueError(f"abs_abar must be [L, F], got shape {abs_abar.shape}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    own = neuron_array(neurons, *abs_abar.shape)
    deciles = layer_deciles(abs_abar)
    in_set = np.zeros(abs_abar.shape, bool)
    in_set[own[:, 0], own[:, 1]] = True
    out = np.repeat(own[None], n_draws, axis=0)  # [n_draws, k, 2]; layers stay, indices are replaced below
    rng = np.random.default_rng(seed)
    cells = sorted({(int(l), int(deciles[l, i])) for l, i in own})
    for layer, decile in cells:  # sorted cells: the draw order, hence the result, depends on the input only
        members = np.flatnonzero((own[:, 0] == layer) & (deciles[layer, own[:, 1]] == decile))
        pool = np.flatnonzero((deciles[layer] == decile) & ~in_set[layer])
        if len(pool) < len(members):
            raise ValueError(f"layer {layer}, |abar| decile {decile}: {len(members)} KNs to match but only "
                             f"{len(pool)} other neurons in that decile; the layer is too narrow for a matched null")
        keys = rng.random((n_draws, len(pool)))
        picks = pool[np.argsort(keys, axis=1)[:, :len(members)]]  # without replacement within a draw
        out[:, members, 1] = picks
    return out


def matched_random_knsets(neurons, abar: Float[np.ndarray, "L F"], n_draws: int, seed=0) -> list[KNSet]:
    """`matched_random_sets` as KNSets, each neuron weighted by the fact's own abar (signed) there, so that R of
    a draw is read exactly as R of the fact's set."""
    abar = np.asarray(abar, np.float32)
    return [KNSet.from_abar(draw, abar) for draw in matched_random_sets(neurons, np.abs(abar), n_draws, seed)]


# ---- the "both hops" control ---------------------------------------------------------------------------

def union(sets: Sequence) -> Int[np.ndarray, "n 2"]:
    """The union of neuron sets as sorted distinct (layer, index) pairs, int [n, 2] (empty sets are allowed
    beside a non-empty one). Draw the "both hops" random control for it:
    `jaxkn.interventions.random_neurons(union([kn1, kn2]), cfg, seed)`."""
    pairs = [tuple(int(v) for v in p) for s in sets for p in (s.neurons if isinstance(s, KNSet) else s)]
    if not pairs:
        raise ValueError("the union of the sets is empty: there is nothing to intervene on or to match")
    return np.unique(np.asarray(pairs, np.int64), axis=0)


__all__ = ["N_DECILES", "wrong_fact_keys", "layer_deciles", "matched_random_sets", "matched_random_knsets",
           "union"]
