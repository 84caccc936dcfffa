"""Stage 2b: the KN sets every score and intervention uses, with the nulls that can fail (METHOD.md §4-§5).

Shared neurons depend on every studied fact, so this runs after all facts are attributed: it is cheap (set
arithmetic and gathers over the saved read-position activations) and recomputed each run; its hash (`sets_key`)
is recorded in every item, and an item measured under other sets is measured again.

Per fact: the set (`kn_set`: refined minus shared, by default), its same-count random control, its matched
random draws (same layer, same |abar| decile), its wrong-fact null (the sets of other studied facts whose answer
differs, same relation first), and the out-of-sample single-hop levels of R, the paper's score, both random nulls
and the specific score D. All of it is the library's: `jaxkn.neurons`, `jaxkn.nulls`, `jaxkn.recall`.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from jaxkn.data.conflict import stable_seed
from jaxkn.experiments.context import StudyContext
from jaxkn.experiments.results import FactResult, FactSets
from jaxkn.experiments.store import ResultStore
from jaxkn.interventions import random_neurons
from jaxkn.neurons import fact_specific, shared_neurons
from jaxkn.nulls import matched_random_knsets, matched_random_sets, wrong_fact_keys
from jaxkn.recall import KNSet, read_many, single_hop_level, single_hop_specific_level


def _level(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _pairs(neurons) -> list[list[int]]:
    return [[int(a), int(b)] for a, b in np.asarray(neurons, np.int64).reshape(-1, 2)]


def final_sets(fact: FactResult, shared: set, kn_set: str) -> tuple[list, list[list]]:
    """(the set, its leave-one-out folds) for `kn_set`: "specific" drops the shared neurons (METHOD §4)."""
    if kn_set == "specific":
        return fact_specific(fact.refined, shared), [fact_specific(o, shared) for o in fact.loo_refined]
    return [tuple(n) for n in fact.refined], [[tuple(n) for n in o] for o in fact.loo_refined]


def _matched_level(acts: np.ndarray, loo: list, n_draws: int, seed) -> float | None:
    """Leave-one-out level of the matched random null: fold j's draws read on query j (abar of the others)."""
    values = []
    for j, omega in enumerate(loo):
        if not omega:
            continue
        abar_rest = np.delete(acts, j, axis=0).mean(axis=0)
        draws = matched_random_knsets(omega, abar_rest, n_draws, (*seed, j))
        values.append(float(np.mean(np.asarray(read_many(acts[j], draws)))))
    return _level(np.mean(values)) if values else None


def fact_sets(ctx: StudyContext, key: str, fact: FactResult, acts: np.ndarray, shared: set,
              null_sets: dict[str, KNSet], facts_meta: dict) -> FactSets:
    """The set, nulls and single-hop levels of one fact (module docstring); acts [n, L, F] at the read position."""
    s = ctx.settings
    neurons, loo = final_sets(fact, shared, s.kn_set)
    abar_full = acts.mean(axis=0)
    seed = (s.seed, stable_seed(*fact.triple))
    shared_in = sorted(tuple(n) for n in fact.refined if tuple(n) in shared)
    if not neurons:
        return FactSets(neurons=[], abar=[], shared_in=_pairs(shared_in), random=[], abar_random=[], matched=[],
                        matched_abar=[], wrong=[], single_R=None, single_R_per_query=[None] * len(acts),
                        single_paper=None, single_random=None, single_matched=None, single_D=None,
                        single_D_per_query=[None] * len(acts))
    rand = random_neurons(neurons, ctx.cfg, seed)
    matched = matched_random_sets(neurons, np.abs(abar_full), s.matched_draws, seed)
    # every other studied fact with a KN set and another answer (METHOD §5: all of them; the count is reported)
    candidates = {k: facts_meta[k] for k in facts_meta if k == key or k in null_sets}
    try:
        wrong = wrong_fact_keys(key, candidates, n_min=1)
    except ValueError:  # no other fact with another answer: D is undefined for this fact (skipped and counted)
        wrong = []
    rand_loo = [random_neurons(o, ctx.cfg, (*seed, j)) if o else o for j, o in enumerate(loo)]
    r = single_hop_level(acts, loo)
    d_per_query, d_level = [None] * len(acts), None
    if wrong:
        d = single_hop_specific_level(acts, loo, [null_sets[k] for k in wrong])
        d_per_query, d_level = [_level(v) for v in d.per_query], _level(d.level)
    return FactSets(
        neurons=_pairs(neurons), abar=[float(abar_full[a, b]) for a, b in neurons], shared_in=_pairs(shared_in),
        random=_pairs(rand), abar_random=[float(abar_full[a, b]) for a, b in np.asarray(rand).reshape(-1, 2)],
        matched=[_pairs(m) for m in matched],
        matched_abar=[[float(abar_full[a, b]) for a, b in m] for m in matched], wrong=list(wrong),
        single_R=_level(r.level), single_R_per_query=[_level(v) for v in r.per_query],
        single_paper=_level(single_hop_level(acts, loo, kind="paper").level),
        single_random=_level(single_hop_level(acts, rand_loo).level),
        single_matched=_matched_level(acts, loo, s.matched_draws, seed),
        single_D=d_level, single_D_per_query=d_per_query,
    )


def run_sets(ctx: StudyContext, store: ResultStore, facts: dict, keys: dict) -> tuple[dict, str, dict]:
    """Every studied fact's `FactSets`, the sets' hash, and the facts summary of the report.

    facts: triple -> FactResult; keys: triple -> its fact key (the file name under facts/).
    """
    s = ctx.settings
    by_key = {keys[t]: f for t, f in facts.items()}
    shared = shared_neurons({k: [tuple(n) for n in f.refined] for k, f in by_key.items()},
                            {k: f.answer for k, f in by_key.items()}, share=s.shared_s, min_facts=s.shared_min_facts)
    shared_set = {tuple(n.neuron) for n in shared}
    acts = {k: np.asarray(store.read_array(f"facts/{k}.acts.npy"), np.float64) for k in by_key}
    finals = {k: final_sets(f, shared_set, s.kn_set)[0] for k, f in by_key.items()}
    null_sets = {k: KNSet.from_abar(n, acts[k].mean(axis=0)) for k, n in finals.items() if n}
    meta = {k: (f.answer, f.triple[1]) for k, f in by_key.items()}
    sets = {t: fact_sets(ctx, keys[t], f, acts[keys[t]], shared_set, null_sets, meta) for t, f in facts.items()}
    digest = hashlib.sha256(json.dumps(
        {"sets": {keys[t]: v.neurons for t, v in sets.items()}, "shared": sorted(map(list, shared_set)),
         "nulls": {keys[t]: v.wrong for t, v in sets.items()}}, sort_keys=True).encode()).hexdigest()[:16]
    return sets, digest, facts_summary(ctx, by_key, {keys[t]: v for t, v in sets.items()}, shared)


def _per_layer(sets, n_layers: int) -> list[int]:
    counts = np.zeros(n_layers, int)
    for neurons in sets:
        for layer, _ in neurons:
            counts[int(layer)] += 1
    return [int(c) for c in counts]


def facts_summary(ctx: StudyContext, facts: dict[str, FactResult], sets: dict[str, FactSets], shared) -> dict:
    """What the report says about the facts: shared neurons, KN counts per layer, IG completeness per layer."""
    s, n_layers = ctx.settings, ctx.cfg.n_layers
    per_layer = np.asarray([f.completeness_per_layer for f in facts.values()]) if facts else np.zeros((0, n_layers))
    points = np.asarray([f.points_per_layer for f in facts.values()]) if facts else np.zeros((0, n_layers), int)
    heat = sorted(facts)[:4]
    return {
        "unique": len(facts), "empty_kn": sum(1 for v in sets.values() if not v.neurons),
        "empty_refined": sum(1 for f in facts.values() if not f.refined),
        "shared": [{"neuron": list(n.neuron), "facts": int(n.facts)} for n in sorted(shared, key=lambda n: -n.facts)],
        "shared_rule": (f"refined for >= max({s.shared_min_facts}, {s.shared_s} x {len(facts)}) facts with "
                        f"distinct answers (METHOD §4)"),
        "kn_counts_per_layer": {"refined": _per_layer([f.refined for f in facts.values()], n_layers),
                                "specific": _per_layer([v.neurons for v in sets.values()], n_layers),
                                "shared": _per_layer([[n.neuron] for n in shared], n_layers)},
        "completeness": {
            "max": float(per_layer.max()) if per_layer.size else 0.0,
            "median": float(np.median(per_layer)) if per_layer.size else 0.0,
            "flagged_layers": int(sum(f.flagged for f in facts.values())),
            "points_per_layer": [int(v) for v in points.max(axis=0)] if points.size else [],
            "tolerance": s.attribution.tolerance,
        },
        "completeness_per_layer_max": [float(v) for v in per_layer.max(axis=0)] if per_layer.size else [],
        "heatmaps": {k: {"scores_path": f"facts/{k}.scores.npy", "neurons": sets[k].neurons,
                         "title": f"{' / '.join(facts[k].label)} -> {facts[k].answer}"} for k in heat},
    }
