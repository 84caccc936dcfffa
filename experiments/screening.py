"""Which items the study can measure, decided before any generation or attribution.

An item is skipped, with its case_id and the reason counted and listed in summary.json and the report, when:
- a hop has fewer than 2 queries (the single-hop level leaves one query out, METHOD §5; MQuAKE items have one
  question per hop: `--mquake-cloze` adds the hop's cloze statement as a second query);
- an answer (bridge or two-hop answer) tokenizes to no token;
- a prompt the study will run does not fit the model's context: a hop query with its answer, or the two-hop
  question under each CoT style (with its generated tokens) or with a counterfactual statement before it.
"""

from __future__ import annotations

from jaxkn.attribution import AttributionInputError, answer_token_ids
from jaxkn.data import TwoHopItem, format_prompt
from jaxkn.data.conflict import conflict_prompt
from jaxkn.experiments.context import StudyContext


def unmeasurable_reason(ctx: StudyContext, item: TwoHopItem) -> str | None:
    """Why the study cannot measure `item` (None: it can)."""
    s, context = ctx.settings, ctx.cfg.max_position_embeddings
    for h in (1, 2):
        hop = item.hop(h)
        if len(hop.queries) < 2:
            hint = " (MQuAKE: set --mquake-cloze to add the hop's cloze statement)" if len(hop.queries) == 1 else ""
            return f"hop {h} has {len(hop.queries)} query; the out-of-sample single-hop level needs at least 2{hint}"
        for q in hop.queries[: s.queries_per_hop]:
            try:
                prompt, answer = answer_token_ids(ctx.tokenizer, format_prompt(q, ctx.styles["none"]), hop.answer)
            except AttributionInputError as err:
                return f"hop {h} answer {hop.answer!r}: {err}"
            if len(prompt) + max(len(answer), s.answer_tokens) > context:
                return f"hop {h} query of {len(prompt)} tokens does not fit the context of {context} tokens"
    try:
        answer_token_ids(ctx.tokenizer, format_prompt(item.two_hop, ctx.styles["none"]), item.answer)
    except AttributionInputError as err:
        return f"two-hop answer {item.answer!r}: {err}"
    for setting in s.cot:
        n_new = s.answer_tokens if setting == "none" else s.cot_tokens
        length = len(ctx.encode(format_prompt(item.two_hop, ctx.styles[setting])))
        if length + n_new > context:
            return (f"the two-hop question ({setting} CoT) takes {length} + {n_new} generated tokens, more than "
                    f"the context of {context}")
    for h in (1, 2):
        length = len(ctx.encode(conflict_prompt(item, h, item.hop(h).answer, ctx.styles["none"])))
        if length + s.answer_tokens > context:
            return f"the knowledge-conflict prompt of hop {h} ({length} tokens) does not fit the context of {context}"
    return None
