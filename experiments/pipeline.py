"""Runs the two-hop study end to end: model and data in, a results folder out (see `experiments.store`).

Order: load model and dataset -> filter (stage 1, resumable per chunk of candidates) -> knowledge neurons per
unique fact (stage 2, cached under facts/) -> per-item measurements (stage 3, one file per item) -> aggregate
(tables, summary.json, report.md, figures: always recomputed from the files, so they are consistent).

Multi-host (`distributed=True`): every host filters the same candidates (deterministic), takes its block of the
selected items (`jaxkn.distributed.shard_items`), computes them into its own `out`, and the item results are
gathered once; process 0 writes them and the aggregate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jaxkn.experiments.settings import StudyConfig
from jaxkn.experiments.stages import (
    counterfactual_index,
    fact_stage,
    filter_stage,
    item_stage,
    make_runtime,
    stable_seed,
)
from jaxkn.experiments.store import ResultStore, fact_key


def study_mesh(text: str | None, distributed: bool = False):
    """The ("data", "model") mesh of `--mesh DATAxMODEL` (None: one device, no mesh).

    Multi-host runs give every host its own items, so each host's mesh holds only its local devices: a mesh over
    all hosts' devices would need every host to run the same program on the same step (docs/scaling.md).
    """
    if not text:
        return None
    import jax

    from jaxkn.sharding import make_mesh, parse_mesh

    return make_mesh(*parse_mesh(text), devices=jax.local_devices() if distributed else None)


def load(settings: StudyConfig, mesh=None):
    """(cfg, params, tokenizer, model_id) for `settings.model` (None: the embedded SmolLM2).

    mesh: a `jax.sharding.Mesh` (or "DATAxMODEL") to place the params on under `settings.sharding`.
    """
    import jaxkn

    if settings.model is None:
        cfg, params, tokenizer = jaxkn.load_default_model()
        name = "SmolLM2-135M-Instruct (embedded GGUF Q4_1)"
    else:
        cfg, params, tokenizer = jaxkn.load_model(settings.model)
        name = str(Path(settings.model).resolve())
    if tokenizer is None:
        raise ValueError(f"the model at {settings.model} has no tokenizer (tokenizer.json + tokenizer_config.json); "
                         f"the study needs one to write prompts: save it beside the weights")
    if isinstance(mesh, str):
        mesh = study_mesh(mesh)
    if mesh is not None:
        from jaxkn.sharding import shard_params

        params = shard_params(params, cfg, mesh, settings.sharding)
    digest = hashlib.sha256(json.dumps(sorted(vars(cfg).items()), default=str).encode()).hexdigest()[:8]
    return cfg, params, tokenizer, f"{name} [{digest}]"


def load_dataset(settings: StudyConfig):
    from jaxkn.data import builtin_items, load_items

    return builtin_items() if settings.dataset is None else load_items(settings.dataset)


def _bar(total: int, desc: str, initial: int = 0):
    return tqdm(total=total, initial=initial, desc=desc, unit="it", file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)


def run_filter(rt, store: ResultStore, items: Sequence) -> tuple[list, dict]:
    """Stage 1 over seeded-shuffled candidates, in chunks, until `limit` items pass (state saved per chunk)."""
    from jaxkn.data import greedy_generate_fn, shared_prefix

    s = rt.settings
    order = np.random.default_rng(s.seed).permutation(len(items))
    state = store.read("filter.json") or {"screened": 0, "kept": [], "pairs": {}}
    cache = store.read("filter_cache.json") or {}
    by_id = {it.case_id: it for it in items}
    # The 3-shot exemplars every query shares are computed once per batch (jaxkn.data.prefix_generate).
    gen = greedy_generate_fn(rt.cfg, rt.params, rt.tokenizer, max_new_tokens=s.answer_tokens,
                             batch_size=s.batch_size, shared_prefix=shared_prefix(rt.styles["none"]) or None)
    bar = _bar(s.limit, "filter (items kept)", min(len(state["kept"]), s.limit))
    budget = min(len(items), s.screen * s.limit)
    while len(state["kept"]) < s.limit and state["screened"] < budget:
        need = s.limit - len(state["kept"])
        stop = min(budget, state["screened"] + max(4 * need, 2 * s.batch_size))
        chunk = [items[i] for i in order[state["screened"]: stop]]
        kept, pairs, cache = filter_stage(rt, chunk, cache, gen)
        for pair, c in pairs.items():
            old = state["pairs"].setdefault(pair, {"kept": 0, "total": 0})
            old["kept"], old["total"] = old["kept"] + c["kept"], old["total"] + c["total"]
        state["kept"] += [it.case_id for it in kept]
        state["screened"] += len(chunk)
        store.write("filter_cache.json", cache)
        store.write("filter.json", state)
        bar.update(min(len(state["kept"]), s.limit) - bar.n)
    bar.close()
    return [by_id[c] for c in state["kept"][: s.limit]], state


def run_facts(rt, store: ResultStore, selected: Sequence, attribution_key: str) -> dict:
    """Stage 2: knowledge neurons of every unique fact of the selected items (cached per fact)."""
    facts, todo = {}, []
    for it in selected:
        for h in (1, 2):
            triple = tuple(it.hop(h).triple_id)
            if triple not in facts:
                facts[triple] = store.fact(fact_key(triple, attribution_key))
                if facts[triple] is None:
                    todo.append((triple, it.hop(h)))
    bar = _bar(len(facts), "knowledge neurons (facts)", len(facts) - len(todo))
    for triple, hop in todo:
        facts[triple] = fact_stage(rt, hop, stable_seed(*triple))
        store.write_fact(fact_key(triple, attribution_key), facts[triple])
        bar.update(1)
    bar.close()
    return facts


def run_items(rt, store: ResultStore, selected: Sequence, facts: dict, index: dict) -> list[dict]:
    """Stage 3: per-item measurements in chunks of `batch_size`; each item's file is written atomically."""
    todo = [it for it in selected if not store.has_item(it.case_id)]
    bar = _bar(len(selected), "two-hop items", len(selected) - len(todo))
    done = []
    for start in range(0, len(todo), rt.settings.batch_size):
        chunk = todo[start: start + rt.settings.batch_size]
        item_facts = [{h: facts[tuple(it.hop(h).triple_id)] for h in (1, 2)} for it in chunk]
        bar.set_postfix_str("generating")
        results = item_stage(rt, chunk, item_facts, index, progress=bar.set_postfix_str)
        for res in results:
            store.write_item(res["case_id"], res)
        done += results
        bar.update(len(chunk))
    bar.close()
    return done


def run_study(settings: StudyConfig, out: str | Path, *, resume: bool = False, mesh: str | None = None,
              distributed: bool = False, log=print) -> Path:
    """Runs (or resumes) the study into `out` and returns the path of report.md.

    mesh: "DATAxMODEL" (overrides `settings.mesh`): attribution rows are split over "data", the params sit on
    "model" under `settings.sharding`; other stages run on the placed params with replicated inputs.
    """
    from jaxkn.data import relation_answers
    from jaxkn.experiments.report import write_report
    from jaxkn.runtime import enable_compilation_cache

    enable_compilation_cache()
    started = time.time()
    if distributed:
        from jaxkn.distributed import initialize

        initialize()
    if mesh is not None:
        settings = dataclasses.replace(settings, mesh=mesh)  # recorded in summary.json with the rest
    device_mesh = study_mesh(settings.mesh, distributed)
    cfg, params, tokenizer, model_id = load(settings, device_mesh)
    items = load_dataset(settings)
    store = ResultStore(out, settings.fingerprint(model_id), model_id, resume=resume)
    rt = make_runtime(cfg, params, tokenizer, settings, relation_answers(items), mesh=device_mesh)
    timings = store.read("timings.json") or {}

    def timed(name, fn, *args):
        t0 = time.time()
        value = fn(*args)
        timings[name] = timings.get(name, 0.0) + time.time() - t0
        store.write("timings.json", timings)
        return value

    selected, filter_state = timed("filter", run_filter, rt, store, items)
    mine = selected
    if distributed:
        from jaxkn.distributed import shard_items

        mine = shard_items(selected)
    facts = timed("facts", run_facts, rt, store, mine, settings.attribution_key(model_id))
    timed("items", run_items, rt, store, mine, facts, counterfactual_index(items))
    if distributed:
        import jax

        facts = _merge_hosts(store, mine, len(selected), facts, settings.attribution_key(model_id))
        if jax.process_index() != 0:
            return store.root / "report.md"  # process 0 writes the aggregate
    timings["total_this_session"] = time.time() - started
    report = write_report(store, settings, model_id=model_id, filter_state=filter_state, n_dataset=len(items),
                          selected=[it.case_id for it in selected], facts=facts, timings=timings)
    log(f"report: {report}")
    return report


def _merge_hosts(store: ResultStore, mine: Sequence, n_selected: int, facts: dict, attribution_key: str) -> dict:
    """Gathers every host's item results and facts once; process 0 writes the ones it lacks.

    Returns the facts of every selected item (each host computed only its own items' facts): the summary's fact
    statistics must cover all of them, as in a single-process run.
    """
    import jax

    from jaxkn.distributed import check_unique, gather_results

    local = [{"item": store.read(f"items/{it.case_id}.json"),
              "facts": [[list(it.hop(h).triple_id), facts[tuple(it.hop(h).triple_id)]] for h in (1, 2)]}
             for it in mine]
    everything = gather_results(local, n_selected)
    check_unique([e["item"] for e in everything], "case_id")
    merged = {}
    for entry in everything:
        for triple, fact in entry["facts"]:
            merged.setdefault(tuple(triple), fact)
    if jax.process_index() == 0:
        for entry in everything:
            if not store.has_item(entry["item"]["case_id"]):
                store.write_item(entry["item"]["case_id"], entry["item"])
        for triple, fact in merged.items():
            if store.fact(fact_key(triple, attribution_key)) is None:
                store.write_fact(fact_key(triple, attribution_key), fact)
    return merged
