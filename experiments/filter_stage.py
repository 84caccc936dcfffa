"""Stage 1: keep the items whose single hops the model answers (`jaxkn.data.filter_known`), resumable.

Candidates are taken in a seeded order, in chunks, until `limit` items pass; the state (screened count, kept
case ids, per relation pair counts) and the generation cache are saved after every chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxkn.data import TwoHopItem, filter_known, shared_prefix
from jaxkn.experiments.context import StudyContext
from jaxkn.experiments.progress import bar
from jaxkn.experiments.screening import unmeasurable_reason
from jaxkn.experiments.store import ResultStore
from jaxkn.generate import text_generator


def known_threshold(queries_per_hop: int) -> int:
    """Correct queries a hop needs to count as known: half of those used, rounded up."""
    return math.ceil(queries_per_hop / 2)


def filter_chunk(ctx: StudyContext, candidates: Sequence[TwoHopItem], cache: dict, generate_fn):
    """`filter_known` over `candidates` with the study's settings; returns (kept items, pair counts, cache).

    Two passes with one shared generation cache: the first query of each hop screens (most items of a large
    dataset fail there, at a quarter of the cost), then the hop's first `queries_per_hop` queries decide.
    """
    common = dict(competitors=ctx.competitors, batch_size=ctx.settings.batch_size)
    screen = filter_known(candidates, generate_fn, k=1, cache=cache, max_queries=1, **common)
    final = filter_known(screen.kept, generate_fn, k=known_threshold(ctx.settings.queries_per_hop),
                         cache=screen.cache, max_queries=ctx.settings.queries_per_hop, **common)
    kept = {it.case_id for it in final.kept}
    pairs: dict[str, dict[str, int]] = {}
    for it in candidates:
        c = pairs.setdefault(f"{it.two_hop_id[0][1]}->{it.two_hop_id[1][1]}", {"kept": 0, "total": 0})
        c["total"] += 1
        c["kept"] += int(it.case_id in kept)
    return final.kept, pairs, final.cache


def run_filter(ctx: StudyContext, store: ResultStore, items: Sequence[TwoHopItem]) -> tuple[list, dict]:
    """Stage 1 over seeded-shuffled candidates, in chunks, until `limit` items pass (state saved per chunk)."""
    s = ctx.settings
    order = np.random.default_rng(s.seed).permutation(len(items))
    state = store.read("filter.json") or {"screened": 0, "kept": [], "pairs": {}, "skipped": []}
    cache = store.read("filter_cache.json") or {}
    by_id = {it.case_id: it for it in items}
    # The 3-shot exemplars every query shares are computed once per batch.
    gen = text_generator(ctx.cfg, ctx.params, ctx.tokenizer, max_new_tokens=s.answer_tokens,
                             batch_size=s.batch_size, shared_prefix=shared_prefix(ctx.styles["none"]) or None)
    progress = bar(s.limit, "filter (items kept)", min(len(state["kept"]), s.limit))
    budget = min(len(items), s.screen * s.limit)
    while len(state["kept"]) < s.limit and state["screened"] < budget:
        need = s.limit - len(state["kept"])
        stop = min(budget, state["screened"] + max(4 * need, 2 * s.batch_size))
        chunk, candidates = [], [items[i] for i in order[state["screened"]: stop]]
        for it in candidates:
            reason = unmeasurable_reason(ctx, it)  # skipped before any generation, in the seeded order
            if reason is None:
                chunk.append(it)
            else:
                state["skipped"].append({"case_id": it.case_id, "reason": reason})
        kept, pairs, cache = filter_chunk(ctx, chunk, cache, gen) if chunk else ([], {}, cache)
        for pair, c in pairs.items():
            old = state["pairs"].setdefault(pair, {"kept": 0, "total": 0})
            old["kept"], old["total"] = old["kept"] + c["kept"], old["total"] + c["total"]
        state["kept"] += [it.case_id for it in kept]
        state["screened"] += len(candidates)  # skipped ones count as screened
        store.write("filter_cache.json", cache)
        store.write("filter.json", state)
        store.tick()
        progress.update(min(len(state["kept"]), s.limit) - progress.n)
    progress.close()
    return [by_id[c] for c in state["kept"][: s.limit]], state
