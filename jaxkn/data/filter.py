"""Keeping the items whose single hops a model knows (METHOD.md §6): greedy answers, judged per query.

A hop is known when the model answers at least `k` of its queries correctly (all of them when the hop has fewer
than `k`; **default** k = 1, recorded in the result's settings); an item is kept when both hops are known.

Generation is a plain function `generate_fn(prompts: list[str]) -> list[str]` returning the new text per prompt;
`jaxkn.generate.text_generator(cfg, params, tokenizer)` builds one over a model (short, stops at a newline, since
only the first line is judged). This module runs no model itself. Generations are cached per prompt string in a dict: hop-2 facts
repeat across items, and a caller that persists the returned cache (e.g. as JSON) resumes where it stopped.
`filter_known` itself is pure: it does not mutate the cache passed in.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jaxkn.data.items import TwoHopItem, relation_answers
from jaxkn.data.judge import is_correct
from jaxkn.data.prompts import DEFAULT_STYLE, ChatTokenizer, PromptStyle, format_prompt

GenerateFn = Callable[[list[str]], list[str]]


@dataclass(frozen=True, kw_only=True)
class FilterResult:
    """Outcome of `filter_known`.

    Attributes:
      kept: the items whose two hops are known, in input order.
      pairs: "r1->r2" -> {"kept": n, "total": n}.
      relations: relation id -> {"queries": n, "correct": n, "facts": n, "known": n} over unique facts.
      known: (relation, subject id, hop answer) -> number of correct queries, per unique fact.
      cache: prompt -> generation, including the new generations (persist it to resume).
      settings: what decided the outcome (k, prompt style, max_queries).
    """

    kept: list[TwoHopItem]
    pairs: dict[str, dict[str, int]]
    relations: dict[str, dict[str, int]]
    known: dict[tuple[str, str, str], int]
    cache: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"kept {len(self.kept)} of {sum(p['total'] for p in self.pairs.values())} items"]
        lines += [f"  {name}: {c['kept']}/{c['total']}" for name, c in self.pairs.items()]
        lines += [f"  {r}: {c['correct']}/{c['queries']} queries right, {c['known']}/{c['facts']} facts known"
                  for r, c in self.relations.items()]
        return "\n".join(lines)


def _fact_key(item: TwoHopItem, h: int) -> tuple[str, str, str]:
    hop = item.hop(h)
    return hop.triple_id[1], hop.triple_id[0], hop.answer


def _unique_facts(items: Sequence[TwoHopItem], max_queries: int | None) -> dict[tuple[str, str, str], Any]:
    facts = {}
    for item in items:
        for h in (1, 2):
            key = _fact_key(item, h)
            if key not in facts:
                hop = item.hop(h)
                facts[key] = hop._replace(queries=hop.queries[:max_queries])
    return facts


def _fill_cache(prompts: Sequence[str], generate_fn: GenerateFn, cache: dict[str, str], batch_size: int) -> None:
    todo = sorted(set(p for p in prompts if p not in cache), key=lambda p: (len(p), p))
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        out = generate_fn(batch)
        if len(out) != len(batch):
            raise ValueError(f"generate_fn returned {len(out)} texts for {len(batch)} prompts")
        cache.update(zip(batch, out))


def filter_known(items: Sequence[TwoHopItem], generate_fn: GenerateFn, *, k: int = 1,
                 style: PromptStyle = DEFAULT_STYLE, tokenizer: ChatTokenizer | None = None,
                 cache: Mapping[str, str] | None = None, max_queries: int | None = None,
                 competitors: Mapping[str, Sequence[str]] | None = None, batch_size: int = 32) -> FilterResult:
    """Keeps the items whose hops the model answers (see module docstring).

    Args:
      items: the dataset (or a slice of it).
      generate_fn: prompts -> generated texts (new text only).
      k: correct queries needed per hop (capped at the hop's number of queries).
      style: prompt style of the queries (default: three answer-first shots).
      tokenizer: needed for chat styles.
      cache: earlier prompt -> generation pairs (not mutated).
      max_queries: use only the first n queries of each hop (None: all).
      competitors: relation id -> competing answers for the judge (default: from `items`; pass the full
        dataset's when filtering a slice).
      batch_size: prompts per `generate_fn` call.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    competitors = relation_answers(items) if competitors is None else competitors
    facts = _unique_facts(items, max_queries)
    prompts = {key: [format_prompt(q, style, tokenizer) for q in hop.queries] for key, hop in facts.items()}
    new_cache = dict(cache or {})
    _fill_cache([p for ps in prompts.values() for p in ps], generate_fn, new_cache, batch_size)
    cot = style.cot != "none"
    known, relations = {}, defaultdict(Counter)
    for key, hop in facts.items():
        right = sum(is_correct(new_cache[p], hop.answer, hop.aliases, competitors=competitors.get(key[0], ()),
                               cot=cot) for p in prompts[key])
        known[key] = right
        stats = relations[key[0]]
        stats.update(queries=len(hop.queries), correct=right, facts=1, known=int(right >= min(k, len(hop.queries))))
    kept, pairs = [], defaultdict(Counter)
    for item in items:
        ok = all(known[_fact_key(item, h)] >= min(k, len(facts[_fact_key(item, h)].queries)) for h in (1, 2))
        pair = f"{item.two_hop_id[0][1]}->{item.two_hop_id[1][1]}"
        pairs[pair].update(total=1, kept=int(ok))
        if ok:
            kept.append(item)
    return FilterResult(
        kept=kept, known=known, cache=new_cache,
        pairs={p: {"kept": c["kept"], "total": c["total"]} for p, c in pairs.items()},
        relations={r: {n: c[n] for n in ("queries", "correct", "facts", "known")} for r, c in relations.items()},
        settings={"k": k, "style": style.as_dict(), "max_queries": max_queries},
    )

