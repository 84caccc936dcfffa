"""Answer judging (METHOD.md §6): case, accents, punctuation, articles, aliases, competing longer answers, CoT."""

from __future__ import annotations

import pytest

from jaxkn.data import extract_answer, is_correct, normalize

COUNTRIES = ("Niger", "Nigeria", "Sudan", "South Sudan", "Guinea", "Papua New Guinea", "Equatorial Guinea",
             "Republic of the Congo", "Democratic Republic of the Congo", "Dominica", "Dominican Republic")


def test_normalize():
    assert normalize("The Côte d'Ivoire!") == "cote d ivoire"
    assert normalize("  A  São   Paulo, an  ÉTAT ") == "sao paulo etat"
    assert normalize("Washington, D.C.") == "washington d c"
    assert normalize("Guinea-Bissau") == "guinea bissau"
    assert normalize("ﬁnal") == "final"  # NFKD compatibility folding


@pytest.mark.parametrize("generation, answer, aliases, expected", [
    (" Tokyo", "Tokyo", (), True),
    ("TOKYO.", "Tokyo", (), True),
    (" the city of tokyo", "Tokyo", (), True),
    (" Tokyoite", "Tokyo", (), False),  # word boundary
    (" Kyoto", "Tokyo", (), False),
    (" Brasilia", "Brasília", (), True),  # accents folded
    (" Brasília", "Brasilia", (), True),
    (" The Netherlands", "Netherlands", (), True),  # article dropped
    (" Washington DC", "Washington, D.C.", (), False),  # "dc" is not "d c": aliases cover it
    (" Washington DC", "Washington, D.C.", ("Washington DC",), True),
    (" USA", "United States", ("USA", "America"), True),
    (" the U.S.A.", "United States", ("USA",), False),
    (" Japanese yen", "Yen", ("JPY",), True),
    (" JPY", "Yen", ("JPY",), True),
    ("", "Tokyo", (), False),
])
def test_answers_and_aliases(generation, answer, aliases, expected):
    assert is_correct(generation, answer, aliases) is expected


@pytest.mark.parametrize("generation, answer, expected", [
    (" Nigeria", "Niger", False),  # word boundary alone rejects this
    (" Niger", "Nigeria", False),
    (" South Sudan", "Sudan", False),  # inside a longer answer of the relation
    (" Sudan", "South Sudan", False),
    (" Sudan, not South Sudan", "Sudan", True),  # one occurrence stands on its own
    (" South Sudan", "South Sudan", True),
    (" Papua New Guinea", "Guinea", False),
    (" Guinea", "Guinea", True),
    (" Democratic Republic of the Congo", "Republic of the Congo", False),
    (" the Republic of the Congo", "Republic of the Congo", True),
    (" Dominican Republic", "Dominica", False),
])
def test_competing_longer_answers(generation, answer, expected):
    assert is_correct(generation, answer, competitors=COUNTRIES) is expected


def test_gold_aliases_never_compete():
    # "Congo" is an alias of the Republic of the Congo, and also inside the competitor "DR Congo".
    assert is_correct(" Congo", "Republic of the Congo", ("Congo",), competitors=COUNTRIES + ("DR Congo",))
    assert not is_correct(" DR Congo", "Republic of the Congo", ("Congo",), competitors=COUNTRIES + ("DR Congo",))


def test_first_line_rule():
    assert is_correct(" Paris\nQ: What is the capital of Italy?\nA: Rome", "Paris")
    assert not is_correct(" Paris\nQ: What is the capital of Italy?\nA: Rome", "Rome")
    assert is_correct("\n\n Rome\nmore", "Rome")
    assert is_correct(" Paris\nRome", "Rome", first_line_only=False)


def test_cot_final_answer():
    text = ("Osaka is a city in Japan. The capital of Japan is Tokyo.\nAnswer: Tokyo\n\n"
            "Question: next one\nThoughts: ...")
    assert extract_answer(text, cot=True) == " Tokyo"
    assert is_correct(text, "Tokyo", cot=True)
    assert not is_correct(text, "Japan", cot=True)  # the bridge appears only in the thoughts
    assert is_correct("Thoughts first. answer: Japan. Then ANSWER:  Tokyo", "Tokyo", cot=True)  # the final one
    assert is_correct("Osaka is in Japan, whose capital is Tokyo.", "Tokyo", cot=True)  # no "Answer:": all text
    assert not is_correct("It is Kyoto.\nAnswer: Osaka", "Kyoto", cot=True)
