"""Stage 2: a fact's attributions, refined sets and read-position activations (METHOD.md §3-§4), cached per fact.

Every computation is the library's: integrated gradients (`jaxkn.attribution`, converged mode by default), coarse
and refined sets and their leave-one-out folds (`jaxkn.neurons`), activations (`jaxkn.recall`). What depends on
the other facts (shared neurons, the fact-specific set, the nulls, the levels) is the sets stage's
(`experiments.sets_stage`). This module decides what to run and stores it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxkn.attribution import answer_token_ids, attribute_ids
from jaxkn.data import format_prompt, spoken_answer
from jaxkn.experiments.context import StudyContext
from jaxkn.experiments.progress import bar
from jaxkn.experiments.results import FactResult
from jaxkn.experiments.store import ResultStore, fact_key
from jaxkn.neurons import coarse_mask, leave_one_out_masks, refine_mask
from jaxkn.recall import site_activations


def attribute_queries(ctx: StudyContext, prompts: list[list[int]], answers: list[list[int]]):
    """Attributions of each query's answer, [n, L, F], with P(gold first token) and the completeness record.

    Answer token k of query j is its own row, prompt + y_<k with target y_k (the teacher-forced position of
    METHOD §2); a query's score is the mean over its K rows, which is exactly what one row with K answer slots
    gives. Rows go in fixed batches of `queries_per_hop` (the last one padded by repeating a row) with one
    answer slot each, so the compiled shape does not depend on how many tokens an answer has.

    Returns (scores [n, L, F], prob [n], completeness [n, L] (max over a query's rows), points [n, L],
    flagged [n, L]).
    """
    rows = [(j, p + a[:k], [a[k]]) for j, (p, a) in enumerate(zip(prompts, answers)) for k in range(len(a))]
    width = ctx.settings.queries_per_hop
    n, n_layers = len(prompts), ctx.cfg.n_layers
    scores = np.zeros((n, n_layers, ctx.cfg.d_ff))
    prob = np.zeros(n)
    error, points, flagged = np.zeros((n, n_layers)), np.zeros((n, n_layers), int), np.zeros((n, n_layers), bool)
    for start in range(0, len(rows), width):
        chunk = rows[start: start + width]
        padded = chunk + [chunk[0]] * (width - len(chunk))
        attr = attribute_ids(ctx.params, ctx.cfg, [r[1] for r in padded], [r[2] for r in padded],
                             ctx.settings.attribution, mesh=ctx.mesh)
        got, p_actual = np.asarray(attr.scores, np.float64), np.asarray(attr.prob_actual)[:, 0]
        row_error, row_points = np.asarray(attr.completeness_error, np.float64), np.asarray(attr.points_per_layer)
        row_flagged = np.asarray(attr.flagged)
        for b, (j, row_prompt, _) in enumerate(chunk):
            scores[j] += got[b] / len(answers[j])
            error[j] = np.maximum(error[j], row_error[b])
            points[j] = np.maximum(points[j], row_points[b])
            flagged[j] |= row_flagged[b]
            if len(row_prompt) == len(prompts[j]):
                prob[j] = p_actual[b]  # the row of the first answer token
    return scores, prob, error, points, flagged


def _neuron_sets(masks: np.ndarray) -> list[list[tuple[int, int]]]:
    return [[(int(a), int(b)) for a, b in np.argwhere(m)] for m in masks]


def _pairs(neurons) -> list[list[int]]:
    return [[int(a), int(b)] for a, b in np.asarray(neurons, np.int64).reshape(-1, 2)]


def refine(coarse: np.ndarray, rule: str, p: float) -> tuple[np.ndarray, np.ndarray]:
    """(refined mask [L, F], leave-one-out masks [n, L, F]) of coarse masks [n, L, F] (`jaxkn.neurons`).

    Rule "none" (EasyEdit's reading: no refinement) keeps a neuron coarse in any query.
    """
    if rule == "none":
        n = len(coarse)
        if n < 2:
            raise ValueError(f"a hop needs at least 2 queries, got {n}")
        return coarse.any(0), np.stack([np.delete(coarse, j, axis=0).any(0) for j in range(n)])
    return refine_mask(coarse, rule, p), leave_one_out_masks(coarse, rule, p)


def fact_result(ctx: StudyContext, store: ResultStore, key: str, hop, spoken: dict[str, str]) -> FactResult:
    """One fact's attributions and refined sets (METHOD §4): what does not depend on the other facts.

    The target of query j is the name the model said for it (`spoken`: prompt text -> the filter's answer; Kiev
    for Kyiv, METHOD §6). The per-query activations at the read position and the mean attribution are saved beside
    the fact (`facts/<key>.acts.npy`, `.scores.npy`): the sets stage reads every KN set and null from them.
    """
    s = ctx.settings
    queries = list(hop.queries[: s.queries_per_hop])
    texts = [format_prompt(q, ctx.styles["none"]) for q in queries]
    targets = [spoken_answer(spoken[t], hop.answer, hop.aliases) if t in spoken else hop.answer for t in texts]
    pairs = [answer_token_ids(ctx.tokenizer, t, target) for t, target in zip(texts, targets)]
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    scores, prob_first, error, points, flagged = attribute_queries(ctx, prompts, answers)  # scores [n, L, F]
    coarse = coarse_mask(scores, s.threshold_t)  # [n, L, F]
    refined, loo = refine(coarse, s.refine_rule, s.share_p)
    acts = np.asarray(site_activations(ctx.params, ctx.cfg, prompts, site=s.attribution.site), np.float32)
    store.write_array(f"facts/{key}.acts.npy", acts)
    store.write_array(f"facts/{key}.scores.npy", scores.mean(axis=0).astype(np.float32))
    return FactResult(
        queries=queries, targets=targets, answer=hop.answer, aliases=list(hop.aliases), triple=list(hop.triple_id),
        label=list(hop.triple_label), refined=_pairs(_neuron_sets(refined[None])[0]),
        loo_refined=[_pairs(o) for o in _neuron_sets(loo)], coarse_sizes=[int(c.sum()) for c in coarse],
        prob_first_token=[float(p) for p in prob_first],
        completeness_per_layer=[float(v) for v in error.max(axis=0)],
        points_per_layer=[int(v) for v in points.max(axis=0)], flagged=int(flagged.sum()),
        completeness_error_max=float(error.max()),
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
    spoken = store.read("filter_cache.json") or {}
    progress = bar(len(facts), "knowledge neurons (facts)", len(facts) - len(todo))
    for triple, hop in todo:
        key = fact_key(triple, attribution_key)
        facts[triple] = fact_result(ctx, store, key, hop, spoken)
        store.write_fact(key, facts[triple])
        store.tick()
        progress.update(1)
    progress.close()
    return facts
