"""Answer judging (METHOD.md §6): normalised word-boundary match of the answer or an alias.

Normalisation: Unicode NFKD with accents removed, case folded, punctuation turned into spaces, the articles
"a", "an", "the" dropped, whitespace collapsed. A gold name matches when its words occur as consecutive words
of the generation. A match is rejected when it lies inside an occurrence of a longer competing answer of the same
relation ("Sudan" inside "South Sudan"); pass the relation's answers as `competitors`
(`jaxkn.data.items.relation_answers`). Names that are the gold's own aliases never compete.

What is judged: for chain of thought, the text after the final "Answer:" when there is one (its first line);
otherwise, with `first_line=True` (the non-CoT rule), only the first non-empty line of the generation, because a
few-shot prompted model goes on to write the next "Q: ..." itself.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

ARTICLES = frozenset({"a", "an", "the"})
_ANSWER_MARK = re.compile(r"answer\s*:", re.IGNORECASE)
_PUNCT = re.compile(r"[^\w\s]|_")


def normalize(text: str) -> str:
    """Folded text for matching: "The Côte d'Ivoire!" -> "cote d ivoire"."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return " ".join(w for w in _PUNCT.sub(" ", text).split() if w not in ARTICLES)


def first_line(text: str) -> str:
    """The first line of `text` that has something on it ("" if none)."""
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def extract_answer(generation: str, *, cot: bool = False, first_line_only: bool = True) -> str:
    """The part of a generation that is judged (see module docstring)."""
    if cot:
        marks = list(_ANSWER_MARK.finditer(generation))
        if marks:
            return first_line(generation[marks[-1].end():])
        return generation
    return first_line(generation) if first_line_only else generation


def _occurrences(words: Sequence[str], name: Sequence[str]) -> list[int]:
    n = len(name)
    return [i for i in range(len(words) - n + 1) if list(words[i:i + n]) == list(name)]


def match(text: str, golds: Iterable[str], competitors: Iterable[str] = ()) -> bool:
    """Whether a gold name occurs in `text` on word boundaries, outside any longer competing name found there."""
    words = normalize(text).split()
    gold_keys = {normalize(g) for g in golds} - {""}
    rivals = [k.split() for k in {normalize(c) for c in competitors} - gold_keys - {""}]
    for gold in gold_keys:
        g = gold.split()
        spans = [(j, j + len(rival)) for rival in rivals if len(rival) > len(g) and _occurrences(rival, g)
                 for j in _occurrences(words, rival)]
        for i in _occurrences(words, g):
            if not any(start <= i and i + len(g) <= end for start, end in spans):
                return True
    return False


def is_correct(generation: str, answer: str, aliases: Iterable[str] = (), *, competitors: Iterable[str] = (),
               cot: bool = False, first_line_only: bool = True) -> bool:
    """Judges one generation against the answer and its aliases.

    Args:
      generation: the model's text (new tokens only).
      answer / aliases: the gold names.
      competitors: the other answers (and aliases) of the same relation, for the longer-name rule.
      cot: judge the text after the final "Answer:" when present.
      first_line_only: without CoT, judge only the first non-empty line.
    """
    judged = extract_answer(generation, cot=cot, first_line_only=first_line_only)
    return match(judged, (answer, *aliases), competitors)
