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
from jaxkn.data.conflict import choose_counterfactual, conflict_prompt
from jaxkn.data.prompts import answer_span
from jaxkn.experiments.context import StudyContext
from jaxkn.experiments.progress import bar
from jaxkn.experiments.results import (
    AnswerRead,
    ConditionOutcome,
    ConflictOutcome,
    FactResult,
    ItemResult,
    SingleLevels,
    from_plain,
    to_plain,
)
from jaxkn.experiments.store import ResultStore
from jaxkn.generate import generate
from jaxkn.interventions import generate_under
from jaxkn.recall import generated_activations, set_scores, site_activations

HOPS = (1, 2)
TARGETS = ("hop1", "hop2", "both")
CONDITIONS = tuple(f"{t}/{p}{k}" for t in TARGETS for p in ("", "random_") for k in ("enhance", "suppress"))


def hop_reads(acts: np.ndarray, facts: dict[int, FactResult | None], valid: np.ndarray | None = None) -> dict:
    """Scores of both hops (and their random controls) on activations [L, F] or [N, L, F] (CoT, `valid` [N])."""
    out = {}
    for h, fact in facts.items():
        if fact is None or not fact.neurons:
            continue
        for neurons, abar, name in ((fact.neurons, fact.abar, f"hop{h}"),
                                    (fact.random, fact.abar_random, f"hop{h}_random")):
            sc = set_scores(acts, neurons, abar)
            if acts.ndim == 2:
                out[name] = {k: float(v) for k, v in sc.items()}
            else:
                picked = {k: v[valid] for k, v in sc.items()}
                out[name] = {"R": float(picked["R"].max()), "R_mean": float(picked["R"].mean()),
                             "paper": float(picked["paper"].max()), "paper_mean": float(picked["paper"].mean())}
    return out


def direct_answers(ctx: StudyContext, prompts: list[list[int]]) -> list[str]:
    """Greedy short answers (stop at newline / EOS) for token prompts."""
    gen = generate_under(ctx.params, ctx.cfg, prompts, ctx.settings.answer_tokens, None, stop_ids=ctx.stop_ids)
    return [ctx.decode(row) for row in np.asarray(gen.tokens)]


def no_cot_reads(ctx: StudyContext, items: Sequence[TwoHopItem], facts: list[dict]) -> list[AnswerRead]:
    """Scores at the last token of the plain two-hop prompt, and the direct answer, per item."""
    prompts = [ctx.encode(format_prompt(it.two_hop, ctx.styles["none"])) for it in items]
    acts = np.asarray(site_activations(ctx.params, ctx.cfg, prompts, site=ctx.settings.attribution.site), np.float64)
    texts = direct_answers(ctx, prompts)
    return [AnswerRead(reads=hop_reads(a, f), answer_text=text, correct=ctx.judge(it, text, False),
                       says_bridge=is_correct(text, it.bridge, it.fact1_ans_alias))
            for it, f, a, text in zip(items, facts, acts, texts)]


def cot_reads(ctx: StudyContext, items: Sequence[TwoHopItem], facts: list[dict], setting: str) -> list[AnswerRead]:
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
        out.append(AnswerRead(reads=hop_reads(acts[b], f, valid), answer_text=text, correct=ctx.judge(it, text, True),
                              positions=int(valid.sum())))
    return out


def _target_set(facts: dict[int, FactResult | None], target: str, which: str) -> np.ndarray | None:
    hops = (1, 2) if target == "both" else (int(target[-1]),)
    sets = [np.asarray(getattr(facts[h], which)) for h in hops if facts[h] is not None and facts[h].neurons]
    if len(sets) != len(hops):
        return None
    return np.unique(np.concatenate(sets), axis=0)


def interventions(ctx: StudyContext, item: TwoHopItem, facts: dict) -> dict[str, ConditionOutcome]:
    """P(first answer token) and the direct answer under each intervention (METHOD §6.3), for one item.

    All conditions decode in one batch: row 0 is the unscaled model, then a fixed list of conditions (a
    condition whose hop has no knowledge neurons keeps factor 1 and is not reported), so compiled shapes do not
    depend on the item.
    """
    s = ctx.settings
    text = format_prompt(item.two_hop, ctx.styles["none"])
    prompt, target = answer_token_ids(ctx.tokenizer, text, item.answer)
    factors = np.ones((1 + len(CONDITIONS), ctx.cfg.n_layers, ctx.cfg.d_ff), np.float32)
    present = []
    for n, name in enumerate(CONDITIONS, start=1):
        tgt, kind = name.split("/")
        omega = _target_set(facts, tgt, "random" if kind.startswith("random_") else "neurons")
        if omega is not None:
            factors[n, omega[:, 0], omega[:, 1]] = s.enhance if kind.endswith("enhance") else s.suppress
            present.append((n, name))
    gen = generate(ctx.params, ctx.cfg, [prompt] * len(factors), s.answer_tokens, stop_ids=ctx.stop_ids,
                   scale=factors, mode=s.decode_mode, site=s.attribution.site)  # the prompt's KV computed once
    tokens = np.asarray(gen.tokens)
    p_first = np.asarray(jax.nn.softmax(gen.first_logits, axis=-1)[:, target[0]])
    texts = [ctx.decode(row) for row in tokens]

    def outcome(n):
        return ConditionOutcome(p_first=float(p_first[n]), answer_text=texts[n], correct=ctx.judge(item, texts[n], False))

    return {"base": outcome(0), **{name: outcome(n) for n, name in present}}


def conflicts(ctx: StudyContext, items: Sequence[TwoHopItem], facts: list[dict], index: dict
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
                                            follows=follows, reads=hop_reads(a, {h: facts[b][h]}))
    return out


def _single(facts: dict[int, FactResult]) -> dict[str, SingleLevels]:
    return {f"hop{h}": SingleLevels(R=f.single_kn, paper=f.single_kn_paper, R_random=f.single_random,
                                    paper_random=f.single_random_paper) for h, f in facts.items()}


def _chunk_key(chunk: Sequence[TwoHopItem]) -> str:
    return "chunk-" + hashlib.sha256(json.dumps([it.case_id for it in chunk]).encode()).hexdigest()[:16]


def _batched_stages(ctx: StudyContext, store: ResultStore, chunk: Sequence[TwoHopItem], facts: list[dict],
                    index: dict, progress=None) -> tuple[list[dict], list[dict]]:
    """The stages that batch the chunk's items (the CoT settings, the conflicts), each saved when it ends.

    A chunk is always the same items (fixed positions in the selected list), so a resumed run batches exactly
    as an uninterrupted one and its numbers are identical; a stage already saved is not recomputed.
    """
    key = _chunk_key(chunk)
    saved = store.chunk_stages(key)
    for setting in ctx.settings.cot:
        name = f"cot:{setting}"
        if name not in saved:
            rows = no_cot_reads(ctx, chunk, facts) if setting == "none" else cot_reads(ctx, chunk, facts, setting)
            saved[name] = [to_plain(r) for r in rows]
            store.write_chunk_stages(key, saved)
            store.tick()
        if progress:
            progress(name)
    if "conflict" not in saved:
        saved["conflict"] = [to_plain(c) for c in conflicts(ctx, chunk, facts, index)]
        store.write_chunk_stages(key, saved)
        store.tick()
    cot = [{c: from_plain(AnswerRead, saved[f"cot:{c}"][b]) for c in ctx.settings.cot} for b in range(len(chunk))]
    conflict = [from_plain(dict[str, ConflictOutcome], row) for row in saved["conflict"]]
    return cot, conflict


def run_items(ctx: StudyContext, store: ResultStore, selected: Sequence, facts: dict, index: dict
              ) -> list[ItemResult]:
    """Stage 3: per-item measurements in fixed chunks of `batch_size`; each item's file is written as soon as
    it is complete (its interventions decode per item), the chunk's batched stages as each of them ends."""
    progress = bar(len(selected), "two-hop items", sum(store.has_item(it.case_id) for it in selected))
    done = []
    for start in range(0, len(selected), ctx.settings.batch_size):
        chunk = list(selected[start: start + ctx.settings.batch_size])
        if all(store.has_item(it.case_id) for it in chunk):
            continue
        item_facts = [{h: facts[tuple(it.hop(h).triple_id)] for h in HOPS} for it in chunk]
        progress.set_postfix_str("generating")
        cot, conflict = _batched_stages(ctx, store, chunk, item_facts, index, progress.set_postfix_str)
        progress.set_postfix_str("interventions")
        for it, f, c, cf in zip(chunk, item_facts, cot, conflict):
            if store.has_item(it.case_id):
                continue
            result = ItemResult(case_id=it.case_id, two_hop=it.two_hop, bridge=it.bridge, answer=it.answer,
                                relations=[it.two_hop_id[0][1], it.two_hop_id[1][1]],
                                kn_sizes={f"hop{h}": len(f[h].neurons) for h in HOPS}, single=_single(f),
                                cot=c, interventions=interventions(ctx, it, f), conflict=cf)
            store.write_item(result)
            store.tick()
            done.append(result)
            progress.update(1)
        store.drop_chunk(_chunk_key(chunk))
    progress.close()
    return done
