"""Answer judging (METHOD.md §6): a normalised word-boundary match of the answer or an alias, under rules that
make a list, a negation or a longer name wrong.

Normalisation (`normalize`): Unicode NFKD with accents removed; dotted abbreviations closed up first ("U.S.A."
-> "USA", "D.C." -> "DC"), so their letters are not split into words (nor "a" read as an article); case folded;
punctuation turned into word breaks; an article ("a", "an", "the") dropped where a word follows it directly, so a
single-letter answer "A" ("Type A", "Answer: A") survives while "the Netherlands" loses its article; a capital
"A" right after another word ("Type A blood") is a letter, not an article, and stays too.

A name (answer, alias or competitor) occurs where its words are consecutive words of the judged text; its last
word may carry a plural "s"/"es" ("Euros" for "Euro"). An occurrence does not count when
- it lies inside an occurrence of a longer competing name of the same relation ("Sudan" inside "South Sudan");
- it is capitalised and a capitalised word follows it directly: it is part of a longer proper name ("English"
  in "English Channel");
- a negation ("not", "no", "never", "nor", "neither", "-n't") directly precedes it ("Not Paris, but Lyon").
A generation is correct when the gold (answer or alias) occurs and no other answer of the relation does:
naming two or more answers ("Paris, London, Rome", "Europe and Asia", a list of every continent) is wrong. The
relation's answers are the `competitors` (`jaxkn.data.items.relation_answers`); names that are the gold's own
aliases never compete. Without competitors the list rule cannot see other answers.

What is judged (`locate_answer`):
- chain of thought: the first line after the final "Answer:"; else the sentence after the final "the answer
  is"; else, when neither is present (the issue found none of 24 zero-shot CoT outputs with "Answer:"), the
  whole generation, where the list rule above makes an enumeration wrong and a single named answer right. The
  returned `source` says which of the three applied, so a study can count outputs without a marker.
- without CoT, with `first_line_only=True`: the first non-empty line, because a few-shot prompted model goes on
  to write the next "Q: ..." itself.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import NamedTuple

ARTICLES = frozenset({"a", "an", "the"})
NEGATIONS = frozenset({"not", "no", "never", "nor", "neither"})
_ANSWER_MARK = re.compile(r"answer\s*:", re.IGNORECASE)
_ANSWER_IS = re.compile(r"\bthe\s+answer\s+is\b\s*:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_ABBREVIATION = re.compile(r"\b[^\W\d_](?:\.[^\W\d_])+\.?")
_TOKEN = re.compile(r"[^\W_]+|\n|[^\w\s]|_")


class _Word(NamedTuple):
    text: str  # case-folded
    capital: bool  # the first letter was upper case
    joined: bool  # another word follows directly (no punctuation or line break between)


def _strip_accents(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def _words(text: str) -> list[_Word]:
    text = _ABBREVIATION.sub(lambda m: m.group(0).replace(".", ""), _strip_accents(text))
    tokens = [t.group(0) for t in _TOKEN.finditer(text)]
    is_word = [t[0].isalnum() for t in tokens]
    words = []
    for k, tok in enumerate(tokens):
        if not is_word[k]:
            continue
        joined = k + 1 < len(tokens) and is_word[k + 1]
        folded = tok.casefold()
        letter = tok == "A" and k > 0 and is_word[k - 1]  # a capital "A" inside a phrase ("Type A blood")
        if folded in ARTICLES and joined and not letter:
            continue  # an article before a word; a lone "A" is an answer
        words.append(_Word(folded, tok[0].isupper(), joined))
    return words


def normalize(text: str) -> str:
    """Folded text for matching: "The Côte d'Ivoire!" -> "cote d ivoire", "the U.S.A." -> "usa"."""
    return " ".join(w.text for w in _words(text))


def first_line(text: str) -> str:
    """The first line of `text` that has something on it ("" if none)."""
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


class JudgedText(NamedTuple):
    """text: what is judged; source: "answer:", "the answer is", "whole" (CoT without a marker), "first line"
    or "all" (no CoT, `first_line_only=False`)."""

    text: str
    source: str


def locate_answer(generation: str, *, cot: bool = False, first_line_only: bool = True) -> JudgedText:
    """The part of a generation that is judged, and which rule chose it (module docstring)."""
    if not cot:
        return JudgedText(first_line(generation), "first line") if first_line_only else JudgedText(generation, "all")
    marks = list(_ANSWER_MARK.finditer(generation))
    if marks:
        return JudgedText(first_line(generation[marks[-1].end():]), "answer:")
    marks = list(_ANSWER_IS.finditer(generation))
    if marks:
        rest = first_line(generation[marks[-1].end():])
        end = _SENTENCE_END.search(rest)
        return JudgedText(rest[:end.start()] if end else rest, "the answer is")
    return JudgedText(generation, "whole")


def extract_answer(generation: str, *, cot: bool = False, first_line_only: bool = True) -> str:
    """The text that is judged (`locate_answer(...).text`)."""
    return locate_answer(generation, cot=cot, first_line_only=first_line_only).text


def _key(name: str) -> tuple[str, ...]:
    return tuple(w.text for w in _words(name))


def _same_word(text_word: str, name_word: str, last: bool) -> bool:
    return text_word == name_word or (last and text_word in (name_word + "s", name_word + "es"))


def _occurrences(words: Sequence[str], name: Sequence[str]) -> list[int]:
    n = len(name)
    return [i for i in range(len(words) - n + 1)
            if all(_same_word(words[i + k], name[k], k == n - 1) for k in range(n))]


def _negated(words: Sequence[_Word], i: int) -> bool:
    if i == 0 or not words[i - 1].joined:
        return False
    prev = words[i - 1].text
    return prev in NEGATIONS or (prev == "t" and i >= 2 and words[i - 2].text.endswith("n"))


def _affirmed(words: Sequence[_Word], name: tuple[str, ...], longer: Iterable[tuple[str, ...]]) -> list[int]:
    """Start positions where `name` occurs and counts (not inside a longer name, not continued, not negated)."""
    texts = [w.text for w in words]
    spans = [(j, j + len(other)) for other in longer if len(other) > len(name) and _occurrences(other, name)
             for j in _occurrences(texts, other)]
    found = []
    for i in _occurrences(texts, name):
        end = i + len(name) - 1
        if any(start <= i and i + len(name) <= stop for start, stop in spans):
            continue
        if words[end].capital and words[end].joined and words[end + 1].capital:
            continue  # "English Channel": the name is the start of a longer proper name
        if not _negated(words, i):
            found.append(i)
    return found


def match(text: str, golds: Iterable[str], competitors: Iterable[str] = ()) -> bool:
    """Whether a gold name occurs in `text` (and counts) while no competing answer of the relation does."""
    words = _words(text)
    gold_keys = {_key(g) for g in golds} - {()}
    rivals = {_key(c) for c in competitors} - gold_keys - {()}
    names = gold_keys | rivals
    if not any(_affirmed(words, g, names) for g in gold_keys):
        return False
    return not any(_affirmed(words, r, names) for r in rivals)


def is_correct(generation: str, answer: str, aliases: Iterable[str] = (), *, competitors: Iterable[str] = (),
               cot: bool = False, first_line_only: bool = True) -> bool:
    """Judges one generation against the answer and its aliases.

    Args:
      generation: the model's text (new tokens only).
      answer / aliases: the gold names.
      competitors: the other answers (and aliases) of the same relation, for the longer-name and list rules.
      cot: judge the text after the final "Answer:" (else after "the answer is", else all of it).
      first_line_only: without CoT, judge only the first non-empty line.
    """
    judged = extract_answer(generation, cot=cot, first_line_only=first_line_only)
    return match(judged, (answer, *aliases), competitors)


def spoken_answer(generation: str, answer: str, aliases: Iterable[str] = (), *, cot: bool = False,
                  first_line_only: bool = True) -> str:
    """Which of the answer and its aliases the model said, as spelled in `answer`/`aliases` ("Kiev" when the
    model wrote Kiev for the gold Kyiv): the earliest name that counts in the judged text, the longest at the
    same position; the answer itself when none occurs. The study attributes these tokens (METHOD §6)."""
    names = [answer, *aliases]
    words = _words(extract_answer(generation, cot=cot, first_line_only=first_line_only))
    keys = {n: _key(n) for n in names}
    best = None
    for n in names:
        if not keys[n]:
            continue
        found = _affirmed(words, keys[n], keys.values())
        if found and (best is None or (found[0], -len(keys[n])) < best[0]):
            best = ((found[0], -len(keys[n])), n)
    return answer if best is None else best[1]
