"""Stage 2: a fact's knowledge neurons and single-hop levels (METHOD.md §4-§5), cached per unique fact.

Every computation is the library's: integrated gradients (`jaxkn.attribution`), coarse and refined sets and
their leave-one-out folds (`jaxkn.neurons`), activations and out-of-sample levels (`jaxkn.recall`), the
same-count random control (`jaxkn.interventions.random_neurons`). This module decides what to run and stores it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxkn.attribution import answer_token_ids, attribute_ids
from jaxkn.data import format_prompt
from jaxkn.data.conflict import stable_seed
from jaxkn.experiments.context import StudyContext
from jaxkn.experiments.progress import bar
from jaxkn.experiments.results import FactResult
from jaxkn.experiments.store import ResultStore, fact_key
from jaxkn.interventions import random_neurons
from jaxkn.neurons import coarse_mask, leave_one_out_masks, refine_mask
from jaxkn.recall import single_hop_level, site_activations


def attribute_queries(ctx: StudyContext, prompts: list[list[int]], answers: list[list[int]]):
    """Attributions of each query's answer, [n, L, F], with P(gold first token) and the largest completeness error.

    Answer token k of query j is its own row, prompt + y_<k with target y_k (the teacher-forced position of
    METHOD §2); a query's score is the mean over its K rows, which is exactly what one row with K answer slots
    gives. Rows go in fixed batches of `queries_per_hop` (the last one padded by repeating a row) with one
    answer slot each, so the compiled shape does not depend on how many tokens an answer has.
    """
    rows = [(j, p + a[:k], [a[k]]) for j, (p, a) in enumerate(zip(prompts, answers)) for k in range(len(a))]
    width = ctx.settings.queries_per_hop
    scores = np.zeros((len(prompts), ctx.cfg.n_layers, ctx.cfg.d_ff))
    prob, error = np.zeros(len(prompts)), 0.0
    for start in range(0, len(rows), width):
        chunk = rows[start: start + width]
        padded = chunk + [chunk[0]] * (width - len(chunk))
        attr = attribute_ids(ctx.params, ctx.cfg, [r[1] for r in padded], [r[2] for r in padded],
                             ctx.settings.attribution, mesh=ctx.mesh)
        got, p_actual = np.asarray(attr.scores, np.float64), np.asarray(attr.prob_actual)[:, 0]
        error = max(error, float(np.asarray(attr.completeness_error)[: len(chunk)].max()))
        for b, (j, row_prompt, _) in enumerate(chunk):
            scores[j] += got[b] / len(answers[j])
            if len(row_prompt) == len(prompts[j]):
                prob[j] = p_actual[b]  # the row of the first answer token
    return scores, prob, error


def _neuron_sets(masks: np.ndarray) -> list[list[tuple[int, int]]]:
    return [[(int(a), int(b)) for a, b in np.argwhere(m)] for m in masks]


def _pairs(neurons) -> list[list[int]]:
    return [[int(a), int(b)] for a, b in np.asarray(neurons, np.int64).reshape(-1, 2)]


def _none_if_nan(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def fact_result(ctx: StudyContext, hop, fact_seed: int) -> FactResult:
    """Knowledge neurons and single-hop levels of one fact (hop), with the random control beside them."""
    s = ctx.settings
    queries = list(hop.queries[: s.queries_per_hop])
    pairs = [answer_token_ids(ctx.tokenizer, format_prompt(q, ctx.styles["none"]), hop.answer) for q in queries]
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    scores, prob_first, completeness = attribute_queries(ctx, prompts, answers)  # scores [n, L, F]
    coarse = coarse_mask(scores, s.threshold_t)  # [n, L, F]
    neurons = _neuron_sets(refine_mask(coarse, s.refine_rule, s.share_p)[None])[0]
    loo = _neuron_sets(leave_one_out_masks(coarse, s.refine_rule, s.share_p))
    acts = np.asarray(site_activations(ctx.params, ctx.cfg, prompts, site=s.attribution.site), np.float64)
    rand = random_neurons(neurons, ctx.cfg, (s.seed, fact_seed)) if neurons else np.zeros((0, 2), int)
    rand_loo = [random_neurons(o, ctx.cfg, (s.seed, fact_seed, j)) if o else o for j, o in enumerate(loo)]
    abar = acts.mean(axis=0)
    levels = {name: (single_hop_level(acts, sets), single_hop_level(acts, sets, kind="paper"))
              for name, sets in (("kn", loo), ("random", rand_loo))}
    return FactResult(
        queries=queries, answer=hop.answer, triple=list(hop.triple_id), label=list(hop.triple_label),
        neurons=_pairs(neurons), random=_pairs(rand), loo_sizes=[len(o) for o in loo],
        coarse_sizes=[int(c.sum()) for c in coarse],
        abar=[float(abar[layer, i]) for layer, i in neurons],
        abar_random=[float(abar[layer, i]) for layer, i in np.asarray(rand).reshape(-1, 2)],
        prob_first_token=[float(p) for p in prob_first], completeness_error_max=completeness,
        single_kn=_none_if_nan(levels["kn"][0].level),
        single_kn_per_query=[_none_if_nan(v) for v in levels["kn"][0].per_query],
        single_kn_paper=_none_if_nan(levels["kn"][1].level),
        single_random=_none_if_nan(levels["random"][0].level),
        single_random_per_query=[_none_if_nan(v) for v in levels["random"][0].per_query],
        single_random_paper=_none_if_nan(levels["random"][1].level),
    )


def run_facts(ctx: StudyContext, store: ResultStore, selected: Sequence, attribution_key: str) -> dict:
    """Stage 2: knowledge neurons of every unique fact of the selected items (cached per fact)."""
    facts, todo = {}, []
    for it in selected:
        for h in (1, 2):
            triple = tuple(it.hop(h).triple_id)
            if triple not in facts:
                facts[triple] = store.fact(fact_key(triple, attribution_key))
                if facts[triple] is None:
                    todo.append((triple, it.hop(h)))
    progress = bar(len(facts), "knowledge neurons (facts)", len(facts) - len(todo))
    for triple, hop in todo:
        facts[triple] = fact_result(ctx, hop, stable_seed(*triple))
        store.write_fact(fact_key(triple, attribution_key), facts[triple])
        store.tick()
        progress.update(1)
    progress.close()
    return facts
