"""Prompt text for single-hop queries and two-hop questions (METHOD.md §6.4). Strings only; tokenizing is elsewhere.

Settings (`PromptStyle`, recorded with every result):
- `cot="none"` (default): `shots` answer-first exemplars "Q: ...\\nA: ...", then "Q: {q}\\nA:". shots=3 is the
  default; shots=0 is the bare "Q: {q}\\nA:" for base models.
- `cot="zero_shot"`: "Q: {q}\\nA: Let's think step by step." (no exemplars: shots must be 0).
- `cot="few_shot"`: `shots` worked "Question: ...\\nThoughts: ...\\nAnswer: ..." exemplars, then
  "Question: {q}\\nThoughts:"; the model is expected to end with "Answer: X" (the judge reads after it).
- `chat=True`: the same content as chat turns (each exemplar a user/assistant pair) rendered with the
  tokenizer's chat template (`tokenizer.apply_chat_template(messages, add_generation_prompt=True)` -> str).

Every prompt is `prefix + body`, where the prefix depends only on the style (so its keys/values can be cached
once): `prompt_parts(q, style, tokenizer)` returns the two pieces, `shared_prefix(style, tokenizer)` the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from jaxkn.data.exemplars import ANSWER_FIRST, COT_EXEMPLARS

COT_MODES = ("none", "zero_shot", "few_shot")
ZERO_SHOT_TRIGGER = "Let's think step by step."


class ChatTokenizer(Protocol):
    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str: ...


@dataclass(frozen=True, kw_only=True)
class PromptStyle:
    """How a question becomes a prompt.

    Attributes:
      shots: number of exemplars (answer-first for cot="none", worked CoT for cot="few_shot"; 0 for zero_shot).
      chat: render with the tokenizer's chat template instead of plain text.
      cot: "none", "zero_shot" or "few_shot".
    """

    shots: int = 3
    chat: bool = False
    cot: str = "none"

    def __post_init__(self):
        if self.cot not in COT_MODES:
            raise ValueError(f"unknown cot mode {self.cot!r}; choose from {COT_MODES}")
        available = len(COT_EXEMPLARS) if self.cot == "few_shot" else len(ANSWER_FIRST)
        if not 0 <= self.shots <= available:
            raise ValueError(f"shots={self.shots} out of range: {self.cot!r} has {available} exemplars")
        if self.cot == "zero_shot" and self.shots:
            raise ValueError("zero-shot CoT takes no exemplars: set shots=0")
        if self.cot == "few_shot" and not self.shots:
            raise ValueError("few-shot CoT needs exemplars: set shots >= 1 (or use cot='zero_shot')")

    def as_dict(self) -> dict[str, Any]:
        return {"shots": self.shots, "chat": self.chat, "cot": self.cot}


DEFAULT_STYLE = PromptStyle()
COT_STYLES = {"none": PromptStyle(), "zero_shot": PromptStyle(shots=0, cot="zero_shot"),
              "few_shot": PromptStyle(shots=3, cot="few_shot")}


def format_plain(question: str) -> str:
    """The bare base-model prompt "Q: {question}\\nA:"."""
    return f"Q: {question}\nA:"


def _turns(style: PromptStyle) -> list[tuple[str, str]]:
    """(user text, assistant text) of each exemplar of the style, in plain-text wording."""
    if style.cot == "few_shot":
        return [(f"Question: {e.question}", f"Thoughts: {e.thoughts}\nAnswer: {e.answer}")
                for e in COT_EXEMPLARS[:style.shots]]
    if style.cot == "none":
        return [(e.question, e.answer) for e in ANSWER_FIRST[:style.shots]]
    return []


def _plain_parts(question: str, style: PromptStyle) -> tuple[str, str]:
    if style.cot == "few_shot":
        prefix = "".join(f"{u}\n{a}\n\n" for u, a in _turns(style))
        return prefix, f"Question: {question}\nThoughts:"
    if style.cot == "zero_shot":
        return "", f"Q: {question}\nA: {ZERO_SHOT_TRIGGER}"
    prefix = "".join(f"{format_plain(u)} {a}\n\n" for u, a in _turns(style))
    return prefix, format_plain(question)


def _chat_messages(question: str, style: PromptStyle) -> list[dict[str, str]]:
    messages = []
    for user, assistant in _turns(style):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    if style.cot == "few_shot":
        content = f"Question: {question}"
    elif style.cot == "zero_shot":
        content = f"{question}\n{ZERO_SHOT_TRIGGER}"
    else:
        content = question
    return messages + [{"role": "user", "content": content}]


def format_chat(tokenizer: ChatTokenizer, question: str, style: PromptStyle = PromptStyle(shots=0, chat=True)
                ) -> str:
    """The question as chat turns (exemplars first) rendered by the tokenizer's template, ready to generate."""
    return tokenizer.apply_chat_template(_chat_messages(question, style), add_generation_prompt=True)


def _chat_parts(question: str, style: PromptStyle, tokenizer: ChatTokenizer) -> tuple[str, str]:
    full = format_chat(tokenizer, question, style)
    exemplars = _chat_messages(question, style)[:-1]
    # The exemplar turns alone render to a prefix of the full prompt for ordinary templates; when a template
    # renders them differently (e.g. a system line that depends on the last turn), nothing is shared.
    prefix = tokenizer.apply_chat_template(exemplars, add_generation_prompt=False) if exemplars else ""
    if not full.startswith(prefix):
        prefix = ""
    return prefix, full[len(prefix):]


def prompt_parts(question: str, style: PromptStyle = DEFAULT_STYLE, tokenizer: ChatTokenizer | None = None
                 ) -> tuple[str, str]:
    """(shared prefix, question-specific body); their concatenation is the prompt."""
    if style.chat:
        if tokenizer is None:
            raise ValueError("a chat-style prompt needs the tokenizer (its chat template): pass tokenizer=")
        return _chat_parts(question, style, tokenizer)
    return _plain_parts(question, style)


def format_prompt(question: str, style: PromptStyle = DEFAULT_STYLE, tokenizer: ChatTokenizer | None = None) -> str:
    """The full prompt for `question` in `style`."""
    prefix, body = prompt_parts(question, style, tokenizer)
    return prefix + body


def shared_prefix(style: PromptStyle = DEFAULT_STYLE, tokenizer: ChatTokenizer | None = None) -> str:
    """The part of every prompt of `style` that precedes the question ("" when nothing is shared)."""
    return prompt_parts("?", style, tokenizer)[0]


def answer_span(token_ids, decode) -> int:
    """How many generated tokens belong to the answer: up to where the model starts a new exemplar
    ("\\nQuestion:" or "\\nQ:"), at least one. `decode(ids) -> str`; ids < 0 (padding after a stop) are dropped."""
    ids = [int(t) for t in token_ids if t >= 0]
    for k in range(1, len(ids) + 1):
        text = decode(ids[:k])
        if "\nQuestion:" in text or "\nQ:" in text:
            return max(k - 1, 1)
    return max(len(ids), 1)
