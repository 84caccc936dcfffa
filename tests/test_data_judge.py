"""Answer judging (METHOD.md §6): case, accents, punctuation, articles, aliases, competing longer answers, CoT."""

from __future__ import annotations

import pytest

from jaxkn.data import extract_answer, is_correct, normalize
from jaxkn.data.judge import locate_answer, spoken_answer

COUNTRIES = ("Niger", "Nigeria", "Sudan", "South Sudan", "Guinea", "Papua New Guinea", "Equatorial Guinea",
             "Republic of the Congo", "Democratic Republic of the Congo", "Dominica", "Dominican Republic")


def test_normalize():
    assert normalize("The Côte d'Ivoire!") == "cote d ivoire"
    assert normalize("  A  São   Paulo, an  ÉTAT ") == "sao paulo etat"
    assert normalize("Washington, D.C.") == "washington dc"  # dotted abbreviations close up
    assert normalize("the U.S.A.") == "usa"  # not "u s" with "a" read as an article
    assert normalize("A") == "a" and normalize("Type A blood") == "type a blood"  # a lone letter is no article
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
    (" Washington DC", "Washington, D.C.", (), True),  # "D.C." closes up to "dc"
    (" USA", "United States", ("USA", "America"), True),
    (" the U.S.A.", "United States", ("USA",), True),
    (" the U.S.", "United States", ("USA",), False),
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


CAPITALS = ("Paris", "London", "Rome", "Berlin", "Lyon", "Tokyo")
CONTINENTS = ("Africa", "Antarctica", "Asia", "Europe", "North America", "Oceania", "South America", "Australia")
LANGUAGES = ("English", "French", "German", "Spanish")
CURRENCIES = ("Euro", "United States dollar", "Pound sterling", "Yen")
BLOOD_TYPES = ("A", "B", "AB", "O")
EVERY_CONTINENT = ("The continents are:\n1. Africa\n2. Antarctica\n3. Asia\n4. Europe\n5. North America\n"
                   "6. Oceania\n7. South America")

# The fixed list of METHOD §6: (generation, answer, aliases, competitors, cot, verdict).
JUDGE_LIST = [
    (" Paris", "Paris", (), CAPITALS, False, True),
    (" Paris, London, Rome", "Paris", (), CAPITALS, False, False),  # two or more answers of the relation
    (" Paris or London", "Paris", (), CAPITALS, False, False),
    (" Not Paris, but Lyon", "Paris", (), CAPITALS, False, False),  # negating the gold
    (" Not Paris, but Lyon", "Lyon", (), CAPITALS, False, True),  # the negated rival is not named
    (" It isn't Paris.", "Paris", (), CAPITALS, False, False),
    (" No, Paris.", "Paris", (), CAPITALS, False, True),  # "No," answers the question; it negates nothing
    (" Paris, France", "Paris", (), CAPITALS, False, True),  # France is not a capital
    (" Niger", "Niger", (), COUNTRIES, False, True),
    (" Nigeria", "Niger", (), COUNTRIES, False, False),
    (" Niger", "Nigeria", (), COUNTRIES, False, False),
    (" South Sudan", "Sudan", (), COUNTRIES, False, False),
    (" Sudan", "South Sudan", (), COUNTRIES, False, False),
    (" South Sudan", "South Sudan", (), COUNTRIES, False, True),  # "Sudan" inside it is no second answer
    (" the U.S.A.", "United States", ("USA",), (), False, True),  # dotted abbreviation survives
    (" U.S.A", "USA", (), (), False, True),
    (" A", "A", (), BLOOD_TYPES, False, True),  # single-letter answer survives
    (" Type A blood", "A", (), BLOOD_TYPES, False, True),
    (" It is a B", "A", (), BLOOD_TYPES, False, False),  # the article "a" is not the answer "A"
    (" AB", "A", (), BLOOD_TYPES, False, False),
    (" Euros", "Euro", (), CURRENCIES, False, True),  # plural
    (" the euro", "Euro", (), CURRENCIES, False, True),
    (" English Channel", "English", (), LANGUAGES, False, False),  # part of a longer name
    (" English", "English", (), LANGUAGES, False, True),
    (" English and French", "English", (), LANGUAGES, False, False),
    (" Europe and Asia", "Asia", (), CONTINENTS, False, False),
    (" Asia", "Asia", (), CONTINENTS, False, True),
    (EVERY_CONTINENT, "Asia", (), CONTINENTS, True, False),  # CoT without a marker: a list of all is wrong
    ("Tokyo is in Japan, which lies in Asia.", "Asia", (), CONTINENTS, True, True),  # ... one answer is right
    ("Dante wrote it. So the answer is Asia. Europe is close.", "Asia", (), CONTINENTS, True, True),
    ("It is in Europe, I think.\nAnswer: Asia", "Asia", (), CONTINENTS, True, True),  # the final "Answer:"
    ("Answer: Asia\nWait, no.\nAnswer: Europe", "Asia", (), CONTINENTS, True, False),
    ("The answer is: Kiev.", "Kyiv", ("Kiev",), CAPITALS, True, True),
    (" Brasília", "Brasilia", (), CAPITALS, False, True),  # accents folded
    (" Tokyo Tower", "Tokyo", (), CAPITALS, False, False),
    (" tokyo", "Tokyo", (), CAPITALS, False, True),
]


@pytest.mark.parametrize("generation, answer, aliases, competitors, cot, expected", JUDGE_LIST)
def test_fixed_judge_list(generation, answer, aliases, competitors, cot, expected):
    assert is_correct(generation, answer, aliases, competitors=competitors, cot=cot) is expected


def test_the_fixed_list_is_long_enough():
    assert len(JUDGE_LIST) >= 30


def test_cot_answer_location_says_which_rule_applied():
    assert locate_answer("x\nAnswer: Rome\nmore", cot=True) == (" Rome", "answer:")
    assert locate_answer("So the answer is Rome. Or not", cot=True) == ("Rome", "the answer is")
    assert locate_answer(EVERY_CONTINENT, cot=True) == (EVERY_CONTINENT, "whole")
    assert locate_answer(" Rome\nQ: next", cot=False).source == "first line"


def test_spoken_answer_is_what_the_model_said():
    assert spoken_answer(" Kiev, of course", "Kyiv", ("Kiev", "Kiyv")) == "Kiev"
    assert spoken_answer(" Kyiv", "Kyiv", ("Kiev",)) == "Kyiv"
    assert spoken_answer(" Lviv", "Kyiv", ("Kiev",)) == "Kyiv"  # none said: the answer itself
    assert spoken_answer(" the United States of America", "USA", ("United States", "United States of America")
                         ) == "United States of America"  # the longest name at the same place
    assert spoken_answer("Thoughts: Kyiv...\nAnswer: Kiev", "Kyiv", ("Kiev",), cot=True) == "Kiev"
