"""The stages of the two-hop study (METHOD.md §4-§6) over library functions; results are plain JSON dicts.

- `filter_stage`: keep items whose single hops the model answers (`jaxkn.data.filter_known`).
- `fact_stage`: a fact's knowledge neurons from its paraphrased queries (integrated gradients, coarse at
  t * max, refined at share p), leave-one-out sets, the out-of-sample single-hop level, and a seeded random
  control set with the same count per layer, all with the same statistics.
- `item_stage`: for one chunk of items, the KN scores of both hops on the two-hop question under each CoT
  setting, the answers and their judgement, the interventions (enhance / suppress / random control on hop 1,
  hop 2 and both) and the knowledge conflict (a counterfactual hop stated before the question).

Conventions: the read position of a single-hop query and of the no-CoT two-hop question is the last prompt
token; with CoT, every generated position before the answer's end. Scores are the default relative score R
(METHOD §5) unless named `paper` (the paper's mean activation). `recalled` is not stored: it is a function of
the stored levels and tau, applied when aggregating (so the tau curve needs no recomputation).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxkn.attribution import AttributionConfig, answer_token_ids, attribute_ids
from jaxkn.data import PromptStyle, TwoHopItem, filter_known, format_prompt, is_correct
from jaxkn.data.prompts import COT_STYLES
from jaxkn.experiments.conditions import decode_conditions
from jaxkn.experiments.settings import StudyConfig
from jaxkn.interventions import random_neurons
from jaxkn.recall import generated_activations, kn_score, relative_score, site_activations

HOPS = (1, 2)
TARGETS = ("hop1", "hop2", "both")


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What every stage needs: the model, the settings, and the dataset-wide answer lists."""

    cfg: Any
    params: Any
    tokenizer: Any
    settings: StudyConfig
    competitors: dict  # relation id -> every answer of that relation in the dataset (for the judge)
    stop_ids: tuple[int, ...]  # ends a direct answer (EOS, newline)
    styles: dict  # CoT setting -> PromptStyle
    mesh: Any = None  # a jaxkn.sharding mesh: attribution rows split over "data" (params already placed)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(t) for t in ids if t >= 0], skip_special_tokens=True)


def make_runtime(cfg, params, tokenizer, settings: StudyConfig, competitors: dict, mesh=None) -> Runtime:
    newline = tokenizer.encode("\n")
    stops = tuple(t for t in [tokenizer.eos_id] + (newline if len(newline) == 1 else []) if t is not None)
    return Runtime(cfg, params, tokenizer, settings, competitors, stops, dict(COT_STYLES), mesh)


def stable_seed(*parts) -> int:
    """A seed from strings and ints, the same in every process (Python's hash() is salted)."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


# ---- stage 1: the filter --------------------------------------------------------------------------------

def known_threshold(settings: StudyConfig) -> int:
    """Correct queries a hop needs to count as known: half of those used, rounded up."""
    return math.ceil(settings.queries_per_hop / 2)


def filter_stage(rt: Runtime, candidates: Sequence[TwoHopItem], cache: dict, generate_fn):
    """`filter_known` over `candidates` with the study's settings; returns (kept items, pair counts, cache).

    Two passes with one shared generation cache: the first query of each hop screens (most items of a large
    dataset fail there, at a quarter of the cost), then the hop's first `queries_per_hop` queries decide.
    """
    common = dict(competitors=rt.competitors, batch_size=rt.settings.batch_size)
    screen = filter_known(candidates, generate_fn, k=1, cache=cache, max_queries=1, **common)
    final = filter_known(screen.kept, generate_fn, k=known_threshold(rt.settings), cache=screen.cache,
                         max_queries=rt.settings.queries_per_hop, **common)
    kept = {it.case_id for it in final.kept}
    pairs: dict[str, dict[str, int]] = {}
    for it in candidates:
        c = pairs.setdefault(f"{it.two_hop_id[0][1]}->{it.two_hop_id[1][1]}", {"kept": 0, "total": 0})
        c["total"] += 1
        c["kept"] += int(it.case_id in kept)
    return final.kept, pairs, final.cache


# ---- stage 2: a fact's knowledge neurons --------------------------------------------------------------

def attribution_config(settings: StudyConfig) -> AttributionConfig:
    return AttributionConfig(site=settings.site, baseline=settings.baseline, quadrature=settings.quadrature,
                             steps=settings.steps)


def refine(coarse: np.ndarray, share_p: float) -> np.ndarray:
    """Refined KNs: (layer, index) pairs coarse in at least p * n of the n prompts (METHOD §4); [k, 2]."""
    counts = coarse.sum(axis=0)
    return np.argwhere(counts >= share_p * coarse.shape[0] - 1e-9)


def _pairs(arr) -> list[list[int]]:
    return [[int(a), int(b)] for a, b in np.asarray(arr).reshape(-1, 2)]


def _loo_level(acts: np.ndarray, sets: list[np.ndarray], paper: bool = False) -> tuple[list, float]:
    """Out-of-sample single-hop level: fold j reads set j (chosen without query j) with abar of the others."""
    per_query = []
    for j, omega in enumerate(sets):
        if len(omega) == 0:
            per_query.append(None)
            continue
        if paper:
            per_query.append(float(kn_score(acts[j], omega)))
        else:
            abar = np.delete(acts, j, axis=0).mean(axis=0)
            per_query.append(float(relative_score(acts[j], omega, abar)))
    vals = [v for v in per_query if v is not None and np.isfinite(v)]
    return per_query, (float(np.mean(vals)) if vals else None)


def attribute_queries(rt: Runtime, prompts: list[list[int]], answers: list[list[int]]):
    """Attributions of each query's answer, [n, L, F], with P(gold) and the largest completeness error.

    Answer token k of query j is its own row, prompt + y_<k with target y_k (the teacher-forced position of
    METHOD §2); a query's score is the mean over its K rows, which is exactly what one row with K answer slots
    gives. Rows go in fixed batches of `queries_per_hop` (the last one padded by repeating a row) with one
    answer slot each, so the compiled shape does not depend on how many tokens an answer has.
    """
    rows = [(j, p + a[:k], [a[k]]) for j, (p, a) in enumerate(zip(prompts, answers)) for k in range(len(a))]
    width = rt.settings.queries_per_hop
    scores = np.zeros((len(prompts), rt.cfg.n_layers, rt.cfg.d_ff))
    prob, error = np.zeros(len(prompts)), 0.0
    for start in range(0, len(rows), width):
        chunk = rows[start: start + width]
        padded = chunk + [chunk[0]] * (width - len(chunk))
        attr = attribute_ids(rt.params, rt.cfg, [r[1] for r in padded], [r[2] for r in padded],
                             attribution_config(rt.settings), mesh=rt.mesh)
        got, p_actual = np.asarray(attr.scores, np.float64), np.asarray(attr.prob_actual)[:, 0]
        error = max(error, float(np.asarray(attr.completeness_error)[: len(chunk)].max()))
        for b, (j, row_prompt, _) in enumerate(chunk):
            scores[j] += got[b] / len(answers[j])
            if len(row_prompt) == len(prompts[j]):
                prob[j] = p_actual[b]  # the row of the first answer token
    return scores, prob, error


def fact_stage(rt: Runtime, hop, fact_seed: int) -> dict:
    """Knowledge neurons and single-hop levels of one fact (hop), with the random control beside them."""
    s = rt.settings
    queries = list(hop.queries[: s.queries_per_hop])
    style = rt.styles["none"]
    pairs = [answer_token_ids(rt.tokenizer, format_prompt(q, style), hop.answer) for q in queries]
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    scores, prob_first, completeness = attribute_queries(rt, prompts, answers)  # scores [n, L, F]
    peak = scores.reshape(len(queries), -1).max(axis=1)
    coarse = scores > s.threshold_t * peak[:, None, None]
    neurons = refine(coarse, s.share_p)
    loo = [refine(np.delete(coarse, j, axis=0), s.share_p) for j in range(len(queries))]
    acts = np.asarray(site_activations(rt.params, rt.cfg, prompts, site=s.site), np.float64)  # [n, L, F]
    rand = random_neurons(neurons, rt.cfg, (s.seed, fact_seed)) if len(neurons) else np.zeros((0, 2), int)
    rand_loo = [random_neurons(o, rt.cfg, (s.seed, fact_seed, j)) if len(o) else o for j, o in enumerate(loo)]
    abar = acts.mean(axis=0)
    result = dict(
        queries=queries, answer=hop.answer, triple=list(hop.triple_id), label=list(hop.triple_label),
        neurons=_pairs(neurons), random=_pairs(rand), loo_sizes=[len(o) for o in loo],
        coarse_sizes=[int(c.sum()) for c in coarse],
        abar=[float(abar[layer, i]) for layer, i in neurons],
        abar_random=[float(abar[layer, i]) for layer, i in rand],
        prob_first_token=[float(p) for p in prob_first], completeness_error_max=completeness,
    )
    for name, sets in (("kn", loo), ("random", rand_loo)):
        per_query, level = _loo_level(acts, sets)
        result[f"single_{name}"], result[f"single_{name}_per_query"] = level, per_query
        result[f"single_{name}_paper"] = _loo_level(acts, sets, paper=True)[1]
    return result


# ---- stage 3: one chunk of items --------------------------------------------------------------------

def _scores(acts: np.ndarray, fact: dict, which: str) -> dict:
    """R and the paper's score of a fact's set ("neurons" or "random") on activations [..., L, F]."""
    omega = np.asarray(fact[which if which == "random" else "neurons"])
    abar_at = np.asarray(fact["abar_random" if which == "random" else "abar"])
    values = acts[..., omega[:, 0], omega[:, 1]]  # [..., n]
    rel = np.sum(np.sign(abar_at) * values, axis=-1) / np.sum(np.abs(abar_at))
    return {"R": rel, "paper": values.mean(axis=-1)}


def hop_reads(acts: np.ndarray, facts: dict[int, dict | None], valid: np.ndarray | None = None) -> dict:
    """Scores of both hops (and their random controls) on activations [L, F] or [N, L, F] (CoT, `valid` [N])."""
    out = {}
    for h, fact in facts.items():
        if fact is None or not fact["neurons"]:
            continue
        for which, name in (("neurons", f"hop{h}"), ("random", f"hop{h}_random")):
            sc = _scores(acts, fact, which)
            if acts.ndim == 2:
                out[name] = {k: float(v) for k, v in sc.items()}
            else:
                picked = {k: v[valid] for k, v in sc.items()}
                out[name] = {"R": float(picked["R"].max()), "R_mean": float(picked["R"].mean()),
                             "paper": float(picked["paper"].max()), "paper_mean": float(picked["paper"].mean())}
    return out


def _cut_cot(rt: Runtime, tokens: Sequence[int]) -> int:
    """Generated tokens that belong to the answer: up to where the model starts a new exemplar."""
    ids = [int(t) for t in tokens if t >= 0]
    for k in range(1, len(ids) + 1):
        text = rt.decode(ids[:k])
        if "\nQuestion:" in text or "\nQ:" in text:
            return max(k - 1, 1)
    return max(len(ids), 1)


def _judge(rt: Runtime, item: TwoHopItem, text: str, cot: bool) -> bool:
    return is_correct(text, item.answer, item.answer_aliases, competitors=rt.competitors.get(item.two_hop_id[1][1],
                                                                                              ()), cot=cot)


def direct_answers(rt: Runtime, prompts: list[list[int]], intervention=None) -> list[str]:
    """Greedy short answers (stop at newline / EOS) for token prompts, under an optional intervention."""
    from jaxkn.interventions import generate_under

    gen = generate_under(rt.params, rt.cfg, prompts, rt.settings.answer_tokens, intervention,
                         mode=rt.settings.decode_mode if intervention is not None else None, stop_ids=rt.stop_ids)
    return [rt.decode(row) for row in np.asarray(gen.tokens)]


def no_cot_stage(rt: Runtime, items: Sequence[TwoHopItem], facts: list[dict]) -> list[dict]:
    """Scores at the last token of the plain two-hop prompt, and the direct answer, per item."""
    prompts = [rt.encode(format_prompt(it.two_hop, rt.styles["none"])) for it in items]
    acts = np.asarray(site_activations(rt.params, rt.cfg, prompts, site=rt.settings.site), np.float64)
    texts = direct_answers(rt, prompts)
    out = []
    for it, f, a, text in zip(items, facts, acts, texts):
        out.append(dict(reads=hop_reads(a, f), answer_text=text, correct=_judge(rt, it, text, False),
                        says_bridge=is_correct(text, it.bridge, it.fact1_ans_alias)))
    return out


def cot_stage(rt: Runtime, items: Sequence[TwoHopItem], facts: list[dict], setting: str) -> list[dict]:
    """Scores at every generated position of a CoT answer (max and mean), and the judged answer, per item."""
    prompts = [rt.encode(format_prompt(it.two_hop, rt.styles[setting])) for it in items]
    gen = generated_activations(rt.params, rt.cfg, prompts, rt.settings.cot_tokens, site=rt.settings.site,
                                stop_ids=[rt.tokenizer.eos_id] if rt.tokenizer.eos_id is not None else [])
    acts = np.asarray(gen.acts, np.float64)  # [B, N, L, F]
    tokens = np.asarray(gen.generation.tokens)
    out = []
    for b, (it, f) in enumerate(zip(items, facts)):
        keep = _cut_cot(rt, tokens[b])
        valid = np.asarray(gen.valid[b]) & (np.arange(tokens.shape[1]) < keep)
        text = rt.decode(tokens[b][:keep])
        out.append(dict(reads=hop_reads(acts[b], f, valid), answer_text=text, correct=_judge(rt, it, text, True),
                        positions=int(valid.sum())))
    return out


def _target_set(facts: dict, target: str, which: str) -> np.ndarray | None:
    hops = (1, 2) if target == "both" else (int(target[-1]),)
    sets = [np.asarray(facts[h][which]) for h in hops if facts[h] is not None and facts[h]["neurons"]]
    if len(sets) != len(hops):
        return None
    return np.unique(np.concatenate(sets), axis=0)


CONDITIONS = tuple(f"{t}/{p}{k}" for t in TARGETS for p in ("", "random_") for k in ("enhance", "suppress"))


def intervention_stage(rt: Runtime, item: TwoHopItem, facts: dict) -> dict:
    """P(first answer token) and the direct answer under each intervention (METHOD §6.3), for one item.

    All conditions decode in one batch (`experiments.conditions`): row 0 is the unscaled model, then a fixed
    list of conditions (a condition whose hop has no knowledge neurons keeps factor 1 and is not reported), so
    compiled shapes do not depend on the item.
    """
    s = rt.settings
    text = format_prompt(item.two_hop, rt.styles["none"])
    prompt, target = answer_token_ids(rt.tokenizer, text, item.answer)
    factors = np.ones((1 + len(CONDITIONS), rt.cfg.n_layers, rt.cfg.d_ff), np.float32)
    present = []
    for n, name in enumerate(CONDITIONS, start=1):
        tgt, kind = name.split("/")
        omega = _target_set(facts, tgt, "random" if kind.startswith("random_") else "neurons")
        if omega is not None:
            factors[n, omega[:, 0], omega[:, 1]] = s.enhance if kind.endswith("enhance") else s.suppress
            present.append((n, name))
    tokens, p_first = decode_conditions(rt.params, rt.cfg, prompt, factors, s.answer_tokens, stop_ids=rt.stop_ids,
                                        site=s.site, mode=s.decode_mode, first_target=target[0])
    texts = [rt.decode(row) for row in tokens]
    out = {"base": {"p_first": float(p_first[0]), "answer_text": texts[0], "correct": _judge(rt, item, texts[0], False)}}
    for n, name in present:
        out[name] = {"p_first": float(p_first[n]), "answer_text": texts[n], "correct": _judge(rt, item, texts[n], False)}
    return out


# ---- knowledge conflict ---------------------------------------------------------------------------------

def counterfactual_index(items: Sequence[TwoHopItem]) -> dict:
    """relation r2 -> {bridge: answer} over the dataset, for choosing counterfactual hops with a known chain."""
    index: dict[str, dict[str, str]] = {}
    for it in items:
        index.setdefault(it.two_hop_id[1][1], {}).setdefault(it.bridge, it.answer)
    return index


def choose_counterfactual(item: TwoHopItem, hop: int, index: dict, seed: int) -> tuple[str, str] | None:
    """(counterfactual object of `hop`, the answer its chain leads to), seeded; None when no other object.

    Hop 1: another bridge of an item with the same second relation (so its chain's answer is known) whose
    answer differs. Hop 2: another answer of the same second relation.
    """
    chains = index.get(item.two_hop_id[1][1], {})
    true_names = {item.bridge, *item.fact1_ans_alias} if hop == 1 else {item.answer, *item.answer_aliases}
    if hop == 1:
        options = sorted((b, a) for b, a in chains.items() if b not in true_names and a != item.answer)
    else:
        options = sorted({(a, a) for a in chains.values() if a not in true_names})
    if not options:
        return None
    return options[np.random.default_rng([seed, stable_seed(item.case_id, hop)]).integers(len(options))]


def conflict_prompt(item: TwoHopItem, hop: int, counterfactual: str, style: PromptStyle) -> str:
    """The two-hop prompt with a counterfactual statement of `hop` (in the exemplars' Q/A form) just before it."""
    prefix, body = _parts(item.two_hop, style)
    return f"{prefix}Q: {item.hop(hop).queries[0]}\nA: {counterfactual}\n\n{body}"


def _parts(question: str, style: PromptStyle) -> tuple[str, str]:
    from jaxkn.data import prompt_parts

    return prompt_parts(question, style)


def conflict_stage(rt: Runtime, items: Sequence[TwoHopItem], facts: list[dict], index: dict) -> list[dict]:
    """Per item and hop: the true fact's scores with a counterfactual hop stated first, and which chain the
    direct answer follows ("true", "counterfactual" or "other")."""
    jobs = []
    for b, it in enumerate(items):
        for h in HOPS:
            choice = choose_counterfactual(it, h, index, rt.settings.seed)
            if choice is not None:
                jobs.append((b, h, choice, rt.encode(conflict_prompt(it, h, choice[0], rt.styles["none"]))))
    out = [dict() for _ in items]
    if not jobs:
        return out
    prompts = [j[3] for j in jobs]
    acts = np.asarray(site_activations(rt.params, rt.cfg, prompts, site=rt.settings.site), np.float64)
    texts = direct_answers(rt, prompts)
    for (b, h, (cf, cf_answer), _), a, text in zip(jobs, acts, texts):
        it = items[b]
        fact = facts[b][h]
        reads = hop_reads(a, {h: fact})
        follows = ("true" if _judge(rt, it, text, False) else
                   "counterfactual" if is_correct(text, cf_answer) else "other")
        out[b][f"hop{h}"] = dict(counterfactual=cf, counterfactual_answer=cf_answer, answer_text=text,
                                 follows=follows, reads=reads)
    return out


def _single(facts: dict) -> dict:
    """The single-hop levels of both hops (copied from the fact cache so an item file stands alone)."""
    return {f"hop{h}": {"R": f["single_kn"], "paper": f["single_kn_paper"], "R_random": f["single_random"],
                        "paper_random": f["single_random_paper"]} for h, f in facts.items()}


def item_stage(rt: Runtime, items: Sequence[TwoHopItem], facts: list[dict], index: dict, progress=None
               ) -> list[dict]:
    """Every per-item measurement for a chunk of items (`facts[b]` = {1: fact dict, 2: fact dict})."""
    results = [dict(case_id=it.case_id, two_hop=it.two_hop, bridge=it.bridge, answer=it.answer,
                    relations=[it.two_hop_id[0][1], it.two_hop_id[1][1]],
                    kn_sizes={f"hop{h}": len(f[h]["neurons"]) for h in HOPS}, single=_single(f), cot={})
               for it, f in zip(items, facts)]
    for setting in rt.settings.cot:
        rows = no_cot_stage(rt, items, facts) if setting == "none" else cot_stage(rt, items, facts, setting)
        for res, row in zip(results, rows):
            res["cot"][setting] = row
        if progress:
            progress(f"cot:{setting}")
    for res, it, f in zip(results, items, facts):
        res["interventions"] = intervention_stage(rt, it, f)
    if progress:
        progress("interventions")
    for res, row in zip(results, conflict_stage(rt, items, facts, index)):
        res["conflict"] = row
    return results
