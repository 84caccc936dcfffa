"""Runs the two-hop study end to end: model and data in, a results folder out (see `experiments.store`).

Order: check settings -> read and validate the dataset -> load the model -> filter (stage 1, resumable per chunk of candidates) -> knowledge neurons per
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
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

import jaxkn
from jaxkn.convert.hub import resolve_model
from jaxkn.data import builtin_items, dataset_hashes, load_items, relation_answers
from jaxkn.data.conflict import counterfactual_index
from jaxkn.distributed import check_unique, gather_results, initialize, shard_items
from jaxkn.errors import UserInputError
from jaxkn.experiments.context import make_context
from jaxkn.experiments.fact_stage import run_facts
from jaxkn.experiments.filter_stage import run_filter
from jaxkn.experiments.item_stage import run_items
from jaxkn.experiments.report import write_report
from jaxkn.experiments.results import FactResult, ItemResult, from_json, to_json
from jaxkn.experiments.sets_stage import run_sets
from jaxkn.experiments.settings import StudyConfig
from jaxkn.experiments.store import ResultStore, check_out, fact_key
from jaxkn.experiments.table import facts_table, item_table
from jaxkn.runtime import enable_compilation_cache
from jaxkn.sharding import make_mesh, parse_mesh, shard_params


def study_mesh(text: str | None, distributed: bool = False):
    """The ("data", "model") mesh of `--mesh DATAxMODEL` (None: one device, no mesh).

    Multi-host runs give every host its own items, so each host's mesh holds only its local devices: a mesh over
    all hosts' devices would need every host to run the same program on the same step (docs/scaling.md).
    """
    if not text:
        return None
    return make_mesh(*parse_mesh(text), devices=jax.local_devices() if distributed else None)


def load(settings: StudyConfig, mesh=None):
    """(cfg, params, tokenizer, model_id) for `settings.model` (None: the embedded SmolLM2).

    mesh: a `jax.sharding.Mesh` (or "DATAxMODEL") to place the params on under `settings.sharding`.
    """
    if settings.model is None:
        cfg, params, tokenizer = jaxkn.load_default_model(dtype=settings.dtype)
        name = "SmolLM2-135M-Instruct (embedded GGUF Q4_1)"
    else:
        cfg, params, tokenizer = jaxkn.load_model(settings.model, dtype=settings.dtype)
        name = str(resolve_model(settings.model).resolve())  # an org/name resolves to its snapshot (commit)
    if tokenizer is None:
        raise ValueError(f"the model at {settings.model} has no tokenizer (tokenizer.json + tokenizer_config.json); "
                         f"the study needs one to write prompts: save it beside the weights")
    if isinstance(mesh, str):
        mesh = study_mesh(mesh)
    if mesh is not None:
        params = shard_params(params, cfg, mesh, settings.sharding)
    digest = hashlib.sha256(json.dumps(sorted(vars(cfg).items()), default=str).encode()).hexdigest()[:8]
    return cfg, params, tokenizer, f"{name} [{digest}]"


def load_dataset(settings: StudyConfig) -> list:
    return builtin_items() if settings.dataset is None else load_items(settings.dataset, mquake_cloze=settings.mquake_cloze)


class StudyInputError(UserInputError):
    """The study cannot measure anything in the given dataset (the message names the items and why)."""


def _nothing_measurable(skipped: list[dict]) -> str:
    shown = "; ".join(f"case {s['case_id']}: {s['reason']}" for s in skipped[:10])
    more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return (f"no item can be measured: all {len(skipped)} screened items were skipped before any attribution "
            f"({shown}{more})")


def run_study(settings: StudyConfig, out: str | Path, *, resume: bool = False, mesh: str | None = None,
              distributed: bool = False, log=print) -> Path:
    """Runs (or resumes) the study into `out` and returns the path of report.md.

    mesh: "DATAxMODEL" (overrides `settings.mesh`): attribution rows are split over "data", the params sit on
    "model" under `settings.sharding`; other stages run on the placed params with replicated inputs.
    """
    enable_compilation_cache()
    started = time.time()
    if distributed:
        initialize()
    if mesh is not None:
        settings = dataclasses.replace(settings, mesh=mesh)  # recorded in summary.json with the rest
    items = load_dataset(settings)  # read and validated before the model loads
    check_out(out)  # a foreign or busy --out is refused before the model loads, too
    device_mesh = study_mesh(settings.mesh, distributed)
    cfg, params, tokenizer, model_id = load(settings, device_mesh)
    store = ResultStore(out, settings.fingerprint(model_id), model_id, resume=resume,
                        settings=settings.scoped("fact", "item"), dataset_hashes=dataset_hashes(items))
    try:  # the folder's lock is released however the run ends (an error, Ctrl-C), not only at exit
        ctx = make_context(cfg, params, tokenizer, settings, relation_answers(items), mesh=device_mesh)

        peaks = {}  # GiB: this process's peak resident memory so far, read as each stage ends

        def timed(name, fn, *args):
            store.start_clock(name)
            try:
                return fn(*args)
            finally:
                store.tick()
                # Compiled programs of one stage are not the next one's: freeing them keeps them out of the
                # next stage's peak memory (the persistent cache still holds them for the next run).
                jax.clear_caches()
                peaks[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # Linux: KiB

        selected, filter_state = timed("filter", run_filter, ctx, store, items)
        if not selected and filter_state.get("skipped") and len(filter_state["skipped"]) == filter_state["screened"]:
            raise StudyInputError(_nothing_measurable(filter_state["skipped"]))
        mine = shard_items(selected) if distributed else selected
        key = settings.attribution_key(model_id)
        facts = timed("facts", run_facts, ctx, store, mine, key)
        if distributed:
            facts = _merge_hosts_facts(store, mine, len(selected), facts, key)  # every host needs every fact
        keys = {t: fact_key(t, key) for t in facts}
        sets, sets_key, summary_of_facts = run_sets(ctx, store, facts, keys)
        timed("items", run_items, ctx, store, mine, facts, sets, keys, sets_key, counterfactual_index(items))
        if distributed:
            _merge_hosts_items(store, mine, len(selected))
            if jax.process_index() != 0:
                return store.root / "report.md"  # process 0 writes the aggregate
        timings = {**store.read("timings.json"), "total_this_session": time.time() - started}
        chosen = {it.case_id for it in selected}
        results = [r for r in store.items() if r.case_id in chosen and r.sets_key == sets_key]
        report = write_report(store, settings, model_id=model_id, filter_state=filter_state, n_dataset=len(items),
                              selected=[it.case_id for it in selected], table=item_table(results, settings.cot),
                              facts_summary=summary_of_facts, facts_table=facts_table(facts, sets, keys),
                              timings=timings, peak_memory=peaks)
    finally:
        store.close()
    log(f"report: {report}")
    return report


def _merge_hosts_facts(store: ResultStore, mine: Sequence, n_selected: int, facts: dict, attribution_key: str
                       ) -> dict:
    """Every host's facts, gathered once: shared neurons and the wrong-fact null need all of them. Each host
    writes the fact files (and their activations) it lacks, so the sets stage reads the same files everywhere."""
    local = [{"facts": [[list(it.hop(h).triple_id), to_json(facts[tuple(it.hop(h).triple_id)]),
                         store.read_array(f"facts/{fact_key(tuple(it.hop(h).triple_id), attribution_key)}.acts.npy"
                                          ).tolist(),
                         store.read_array(f"facts/{fact_key(tuple(it.hop(h).triple_id), attribution_key)}.scores.npy"
                                          ).tolist()] for h in (1, 2)]}
             for it in mine]
    merged = {}
    for entry in gather_results(local, n_selected):
        for triple, fact, acts, scores in entry["facts"]:
            triple = tuple(triple)
            if triple in merged:
                continue
            merged[triple] = from_json(FactResult, fact, "gathered fact")
            name = fact_key(triple, attribution_key)
            if store.fact(name) is None:
                store.write_array(f"facts/{name}.acts.npy", np.asarray(acts, np.float32))
                store.write_array(f"facts/{name}.scores.npy", np.asarray(scores, np.float32))
                store.write_fact(name, merged[triple])
    return merged


def _merge_hosts_items(store: ResultStore, mine: Sequence, n_selected: int) -> None:
    """Gathers every host's item results once; process 0 writes the ones it lacks."""
    everything = gather_results([{"item": to_json(store.item(it.case_id))} for it in mine], n_selected)
    check_unique([e["item"] for e in everything], "case_id")
    if jax.process_index() == 0:
        for entry in everything:
            item = from_json(ItemResult, entry["item"], "gathered item")
            if not store.has_item(item.case_id):
                store.write_item(item)
