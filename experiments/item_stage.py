"""Stage 3: every per-item measurement (METHOD.md §5-§6), for a chunk of items at a time.

- KN reads of both hops (and their random controls) on the two-hop question: no CoT at the last prompt token;
  with CoT at every generated position of the answer, summarised by the max and the mean (`jaxkn.recall`).
- The answers and their judgement (`jaxkn.data` judge), whether the direct answer names the bridge.
- Interventions: enhance / suppress / random control on hop 1, hop 2 and both, all conditions of an item
  decoded in one batch over one prompt (METHOD §6.3).
- Knowledge conflict: a counterfactual hop stated before the question (`jaxkn.data.conflict`).

`recalled` is not stored: it is a function of the stored levels and tau, applied when aggregating.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import jax
import numpy as np

from jaxkn.attribution import answer_token_ids
from jaxkn.data import TwoHopItem, format_prompt, is_correct
from jaxkn.data.conflict import choose_counterfactual, conflict_prompt, stable_seed
from jaxkn.data.prompts import answer_span
from jaxkn.experiments.context import StudyContext
from jaxkn.experiments.progress import bar
from jaxkn.experiments.results import (
    AnswerRead,
    ConditionOutcome,
    ConflictOutcome,
    FactSets,
    ItemResult,
    SingleLevels,
    from_plain,
    to_plain,
)
from jaxkn.experiments.store import ResultStore
from jaxkn.generate import generate
from jaxkn.interventions import generate_under, random_neurons
from jaxkn.nulls import union
from jaxkn.recall import KNSet, generated_activations, read_many, site_activations

HOPS = (1, 2)
TARGETS = ("hop1", "hop2", "both")
NULLS = ("own", "random", "matched", "wrong", "shared")
KINDS = ("enhance", "suppress")
STATS = ("R", "paper", "D", "random", "matched", "wrong")


def _knsets(neurons, abar) -> KNSet | None:
    return KNSet(neurons=np.asarray(neurons), abar=np.asarray(abar)) if neurons else None


def _reads_of(acts: np.ndarray, own: FactSets, nulls: dict[str, FactSets]) -> dict[str, np.ndarray]:
    """Every statistic of one hop on activations [..., L, F]: R, the paper's score, D and the nulls' R."""
    sets = [_knsets(own.neurons, own.abar), _knsets(own.random, own.abar_random)]
    sets += [_knsets(m, a) for m, a in zip(own.matched, own.matched_abar)]
    wrong = [_knsets(nulls[k].neurons, nulls[k].abar) for k in own.wrong]
    values = np.asarray(read_many(acts, sets + wrong), np.float64)  # [..., G]: one gather for every set
    n_matched = len(own.matched)
    out = {"R": values[..., 0], "random": values[..., 1],
           "paper": np.asarray(read_many(acts, sets[:1], kind="paper"), np.float64)[..., 0]}
    if n_matched:
        out["matched"] = values[..., 2: 2 + n_matched].mean(-1)
    if wrong:
        out["wrong"] = values[..., 2 + n_matched:].mean(-1)
        out["D"] = out["R"] - out["wrong"]
    return out


def hop_reads(acts: np.ndarray, facts: dict[int, FactSets | None], nulls: dict[str, FactSets],
              valid: np.ndarray | None = None) -> dict:
    """Statistics of both hops on activations [L, F] (a prompt's read position) or [N, L, F] (CoT positions,
    `valid` [N]): for CoT the max over the answer's positions (named as the statistic) and the mean ("_mean")."""
    out = {}
    for h, own in facts.items():
        if own is None or not own.neurons:
            continue
        stats = _reads_of(acts, own, nulls)
        if acts.ndim == 2:
            out[f"hop{h}"] = {k: float(v) for k, v in stats.items()}
        else:
            out[f"hop{h}"] = {**{k: float(v[valid].max()) for k, v in stats.items()},
                              **{f"{k}_mean": float(v[valid].mean()) for k, v in stats.items()}}
    return out


def direct_answers(ctx: StudyContext, prompts: list[list[int]]) -> list[str]:
    """Greedy short answers (stop at newline / EOS) for token prompts."""
    gen = generate_under(ctx.params, ctx.cfg, prompts, ctx.settings.answer_tokens, None, stop_ids=ctx.stop_ids)
    return [ctx.decode(row) for row in np.asarray(gen.tokens)]


def no_cot_reads(ctx: StudyContext, items: Sequence[TwoHopItem], facts: list[dict], nulls: dict
                 ) -> list[AnswerRead]:
    """Scores at the last token of the plain two-hop prompt, and the direct answer, per item."""
    prompts = [ctx.encode(format_prompt(it.two_hop, ctx.styles["none"])) for it in items]
    acts = np.asarray(site_activations(ctx.params, ctx.cfg, prompts, site=ctx.settings.attribution.site), np.float64)
    texts = direct_answers(ctx, prompts)
    return [AnswerRead(reads=hop_reads(a, f, nulls), answer_text=text, correct=ctx.judge(it, text, False),
                       says_bridge=is_correct(text, it.bridge, it.fact1_ans_alias))
            for it, f, a, text in zip(items, facts, acts, texts)]


def cot_reads(ctx: StudyContext, items: Sequence[TwoHopItem], facts: list[dict], nulls: dict, setting: str
              ) -> list[AnswerRead]:
    """Scores at every generated position of a CoT answer (max and mean), and the judged answer, per item."""
    prompts = [ctx.encode(format_prompt(it.two_hop, ctx.styles[setting])) for it in items]
    eos = [ctx.tokenizer.eos_id] if ctx.tokenizer.eos_id is not None else []
    gen = generated_activations(ctx.params, ctx.cfg, prompts, ctx.settings.cot_tokens,
                                site=ctx.settings.attribution.site, stop_ids=eos)
    acts = np.asarray(gen.acts, np.float64)  # [B, N, L, F]
    tokens = np.asarray(gen.generation.tokens)
    out = []
    for b, (it, f) in enumerate(zip(items, facts)):
        keep = answer_span(tokens[b], ctx.decode)
        valid = np.asarray(gen.valid[b]) & (np.arange(tokens.shape[1]) < keep)
        text = ctx.decode(tokens[b][:keep])
        out.append(AnswerRead(reads=hop_reads(acts[b], f, nulls, valid), answer_text=text, correct=ctx.judge(it, text, True),
                              positions=int(valid.sum())))
    return out


def _condition_sets(facts: dict[int, FactSets | None], nulls: dict[str, FactSets], target: str, null: str,
                    n_draws: int, cfg, seed) -> list[np.ndarray]:
    """The neuron sets of one condition (METHOD §6.3 with §5's nulls); several draws for matched / wrong.

    "both" takes the union of the two hops' sets; its same-count random control is drawn for the union (same
    count per layer as the union), not as the union of two random sets.
    """
    hops = (1, 2) if target == "both" else (int(target[-1]),)
    if any(facts[h] is None or not facts[h].neurons for h in hops):
        return []
    if null == "own":
        return [union([facts[h].neurons for h in hops])]
    if null == "random":
        return [random_neurons(union([facts[h].neurons for h in hops]), cfg, seed)]
    if null == "shared":
        picked = [facts[h].shared_in for h in hops if facts[h].shared_in]
        return [union(picked)] if picked else []
    if null == "matched":
        n = min([n_draws] + [len(facts[h].matched) for h in hops])  # a too-narrow layer leaves no draws
        return [union([facts[h].matched[d] for h in hops]) for d in range(n)]
    wrong = [[k for k in facts[h].wrong if nulls[k].neurons][:n_draws] for h in hops]
    n = min(len(w) for w in wrong)
    return [union([nulls[w[d]].neurons for w in wrong]) for d in range(n)]


def interventions(ctx: StudyContext, item: TwoHopItem, facts: dict, nulls: dict) -> dict[str, ConditionOutcome]:
    """P(first answer token) and the direct answer under each intervention (METHOD §6.3), for one item.

    Row 0 is the unscaled model; then, for hop 1, hop 2 and both, enhance and suppress of the own set and of
    each null (same-count random, matched random draws, wrong-fact sets, the shared neurons alone), all decoded
    in one batch over one prompt (its keys/values computed once). Draws are stored as "target/null#d/kind".
    """
    s = ctx.settings
    text = format_prompt(item.two_hop, ctx.styles["none"])
    prompt, target = answer_token_ids(ctx.tokenizer, text, item.answer)
    names, rows = ["base"], [None]
    for t in TARGETS:
        seed = (s.seed, stable_seed(item.case_id, t))
        for null in NULLS:
            for d, omega in enumerate(_condition_sets(facts, nulls, t, null, s.null_interventions, ctx.cfg, seed)):
                for kind in KINDS:
                    names.append(f"{t}/{null}#{d}/{kind}")
                    rows.append((omega, s.enhance if kind == "enhance" else s.suppress))
    factors = np.ones((len(rows), ctx.cfg.n_layers, ctx.cfg.d_ff), np.float32)
    for n, row in enumerate(rows):
        if row is not None:
            omega, factor = row
            factors[n, omega[:, 0], omega[:, 1]] = factor
    gen = generate(ctx.params, ctx.cfg, [prompt] * len(factors), s.answer_tokens, stop_ids=ctx.stop_ids,
                   scale=factors, mode=s.decode_mode, site=s.attribution.site)  # the prompt's KV computed once
    tokens = np.asarray(gen.tokens)
    p_first = np.asarray(jax.nn.softmax(gen.first_logits, axis=-1)[:, target[0]])
    texts = [ctx.decode(row) for row in tokens]
    return {name: ConditionOutcome(p_first=float(p_first[n]), answer_text=texts[n],
                                   correct=ctx.judge(item, texts[n], False)) for n, name in enumerate(names)}


def conflicts(ctx: StudyContext, items: Sequence[TwoHopItem], facts: list[dict], nulls: dict, index: dict
              ) -> list[dict[str, ConflictOutcome]]:
    """Per item and hop: the true fact's scores with a counterfactual hop stated first, and which chain the
    direct answer follows ("true", "counterfactual" or "other")."""
    jobs = []
    for b, it in enumerate(items):
        for h in HOPS:
            choice = choose_counterfactual(it, h, index, ctx.settings.seed)
            if choice is not None:
                jobs.append((b, h, choice, ctx.encode(conflict_prompt(it, h, choice[0], ctx.styles["none"]))))
    out: list[dict[str, ConflictOutcome]] = [dict() for _ in items]
    if not jobs:
        return out
    prompts = [j[3] for j in jobs]
    acts = np.asarray(site_activations(ctx.params, ctx.cfg, prompts, site=ctx.settings.attribution.site), np.float64)
    texts = direct_answers(ctx, prompts)
    for (b, h, (cf, cf_answer), _), a, text in zip(jobs, acts, texts):
        it = items[b]
        follows = ("true" if ctx.judge(it, text, False) else
                   "counterfactual" if is_correct(text, cf_answer) else "other")
        out[b][f"hop{h}"] = ConflictOutcome(counterfactual=cf, counterfactual_answer=cf_answer, answer_text=text,
                                            follows=follows, reads=hop_reads(a, {h: facts[b][h]}, nulls))
    return out


def _single(facts: dict[int, FactSets], refined: dict[int, int]) -> dict[str, SingleLevels]:
    return {f"hop{h}": SingleLevels(R=f.single_R, paper=f.single_paper, random=f.single_random,
                                    matched=f.single_matched, D=f.single_D, kn=len(f.neurons), refined=refined[h],
                                    shared_in=len(f.shared_in)) for h, f in facts.items()}


def _chunk_key(chunk: Sequence[TwoHopItem], sets_key: str) -> str:
    text = json.dumps([[it.case_id for it in chunk], sets_key])
    return "chunk-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _batched_stages(ctx: StudyContext, store: ResultStore, chunk: Sequence[TwoHopItem], facts: list[dict],
                    nulls: dict, index: dict, key: str, progress=None) -> tuple[list[dict], list[dict]]:
    """The stages that batch the chunk's items (the CoT settings, the conflicts), each saved when it ends.

    A chunk is always the same items (fixed positions in the selected list), so a resumed run batches exactly
    as an uninterrupted one and its numbers are identical; a stage already saved is not recomputed.
    """
    saved = store.chunk_stages(key)
    for setting in ctx.settings.cot:
        name = f"cot:{setting}"
        if name not in saved:
            rows = (no_cot_reads(ctx, chunk, facts, nulls) if setting == "none" else
                    cot_reads(ctx, chunk, facts, nulls, setting))
            saved[name] = [to_plain(r) for r in rows]
            store.write_chunk_stages(key, saved)
            store.tick()
        if progress:
            progress(name)
    if "conflict" not in saved:
        saved["conflict"] = [to_plain(c) for c in conflicts(ctx, chunk, facts, nulls, index)]
        store.write_chunk_stages(key, saved)
        store.tick()
    cot = [{c: from_plain(AnswerRead, saved[f"cot:{c}"][b]) for c in ctx.settings.cot} for b in range(len(chunk))]
    conflict = [from_plain(dict[str, ConflictOutcome], row) for row in saved["conflict"]]
    return cot, conflict


def run_items(ctx: StudyContext, store: ResultStore, selected: Sequence, facts: dict, sets: dict, keys: dict,
              sets_key: str, index: dict) -> list[ItemResult]:
    """Stage 3: per-item measurements in fixed chunks of `batch_size`; each item's file is written as soon as
    it is complete (its interventions decode per item), the chunk's batched stages as each of them ends.

    facts: triple -> FactResult; sets: triple -> FactSets; keys: triple -> fact key; sets_key: the sets' hash
    (an item file measured under other sets counts as missing).
    """
    nulls = {keys[t]: v for t, v in sets.items()}

    def done_already(it) -> bool:
        return store.has_item(it.case_id) and store.item(it.case_id).sets_key == sets_key

    progress = bar(len(selected), "two-hop items", sum(done_already(it) for it in selected))
    done = []
    for start in range(0, len(selected), ctx.settings.batch_size):
        chunk = list(selected[start: start + ctx.settings.batch_size])
        if all(done_already(it) for it in chunk):
            continue
        triples = [[tuple(it.hop(h).triple_id) for h in HOPS] for it in chunk]
        item_sets = [{h: sets[t] for h, t in zip(HOPS, ts)} for ts in triples]
        progress.set_postfix_str("generating")
        key = _chunk_key(chunk, sets_key)
        cot, conflict = _batched_stages(ctx, store, chunk, item_sets, nulls, index, key, progress.set_postfix_str)
        progress.set_postfix_str("interventions")
        for it, ts, f, c, cf in zip(chunk, triples, item_sets, cot, conflict):
            if done_already(it):
                continue
            refined = {h: len(facts[t].refined) for h, t in zip(HOPS, ts)}
            result = ItemResult(case_id=it.case_id, two_hop=it.two_hop, bridge=it.bridge, answer=it.answer,
                                relations=[it.two_hop_id[0][1], it.two_hop_id[1][1]],
                                facts=[keys[t] for t in ts], sets_key=sets_key, single=_single(f, refined),
                                cot=c, interventions=interventions(ctx, it, f, nulls), conflict=cf)
            store.write_item(result)
            store.tick()
            done.append(result)
            progress.update(1)
        store.drop_chunk(key)
    progress.close()
    return done
