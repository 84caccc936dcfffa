"""Relations of the built-in dataset: question templates per single hop and per two-hop composition.

Each single-hop relation has six paraphrased questions about its subject `{s}` (the paper's TFRKN has 6-7 per
hop). Each relation pair (r1, r2) has three phrasings of the composed question about hop 1's subject; the
builder picks one as `two_hop` (seeded) and keeps the others as `two_hop_paraphrases`.

Relation ids are stable strings used in `two_hop_id`; labels are what `two_hop_label` shows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Relation:
    """A single-hop relation.

    Attributes:
      id: stable id used in `two_hop_id` (e.g. "capital").
      label: human-readable name used in `two_hop_label`.
      subject_kind / object_kind: "city", "country", "continent", "language" or "currency".
      queries: paraphrased questions with `{s}` for the subject's name.
    """

    id: str
    label: str
    subject_kind: str
    object_kind: str
    queries: tuple[str, ...]


RELATIONS: dict[str, Relation] = {r.id: r for r in (
    Relation(id="city_country", label="country", subject_kind="city", object_kind="country", queries=(
        "In which country is {s}?",
        "{s} is a city in which country?",
        "Which country is {s} located in?",
        "In what country can you find the city of {s}?",
        "To which country does the city of {s} belong?",
        "Which nation is home to the city of {s}?",
    )),
    Relation(id="capital", label="capital", subject_kind="country", object_kind="city", queries=(
        "What is the capital of {s}?",
        "What is the capital city of {s}?",
        "Which city is the capital of {s}?",
        "Which city serves as the capital of {s}?",
        "What city is the capital of {s}?",
        "Name the capital of {s}.",
    )),
    Relation(id="capital_of", label="capital of", subject_kind="city", object_kind="country", queries=(
        "{s} is the capital of which country?",
        "Of which country is {s} the capital?",
        "Which country has {s} as its capital?",
        "Which country's capital is {s}?",
        "{s} serves as the capital of what country?",
        "What country is {s} the capital city of?",
    )),
    Relation(id="continent", label="continent", subject_kind="country", object_kind="continent", queries=(
        "On which continent is {s}?",
        "{s} is located on which continent?",
        "Which continent is {s} part of?",
        "On what continent does {s} lie?",
        "In which continent is {s} located?",
        "Which continent is home to {s}?",
    )),
    Relation(id="language", label="most widely spoken language", subject_kind="country", object_kind="language",
             queries=(
        "What is the most widely spoken language in {s}?",
        "Which language is most widely spoken in {s}?",
        "What language do most people in {s} speak?",
        "Which language is spoken by the most people in {s}?",
        "What is the main language of {s}?",
        "What language is primarily spoken in {s}?",
    )),
    Relation(id="currency", label="currency", subject_kind="country", object_kind="currency", queries=(
        "What is the currency of {s}?",
        "Which currency is used in {s}?",
        "What currency does {s} use?",
        "What is the official currency of {s}?",
        "What money is used in {s}?",
        "What is the name of the currency used in {s}?",
    )),
    Relation(id="sole_neighbour", label="only land neighbour", subject_kind="country", object_kind="country",
             queries=(
        "Which is the only country that shares a land border with {s}?",
        "{s} shares a land border with only one country. Which one?",
        "Which country is the sole land neighbour of {s}?",
        "What is the only country bordering {s} by land?",
        "Which single country borders {s}?",
        "With which country does {s} share its only land border?",
    )),
)}

# (r1, r2) -> phrasings of the composed question about hop 1's subject {s}.
TWO_HOP_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("city_country", "capital"): (
        "What is the capital of the country where {s} is located?",
        "Which city is the capital of the country that {s} is in?",
        "{s} lies in a country. What is that country's capital?",
    ),
    ("city_country", "continent"): (
        "On which continent is the country where {s} is located?",
        "Which continent is the country containing {s} part of?",
        "{s} lies in a country. On which continent is that country?",
    ),
    ("city_country", "language"): (
        "What is the most widely spoken language in the country where {s} is located?",
        "Which language is most widely spoken in the country that {s} is in?",
        "{s} lies in a country. What language do most people there speak?",
    ),
    ("city_country", "currency"): (
        "What is the currency of the country where {s} is located?",
        "Which currency is used in the country that {s} is in?",
        "{s} lies in a country. What currency does that country use?",
    ),
    ("capital_of", "continent"): (
        "On which continent is the country whose capital is {s}?",
        "Which continent is the country with the capital {s} part of?",
        "{s} is a capital city. On which continent is its country?",
    ),
    ("capital_of", "language"): (
        "What is the most widely spoken language in the country whose capital is {s}?",
        "Which language is most widely spoken in the country with the capital {s}?",
        "{s} is a capital city. What language do most people in its country speak?",
    ),
    ("capital_of", "currency"): (
        "What is the currency of the country whose capital is {s}?",
        "Which currency is used in the country with the capital {s}?",
        "{s} is a capital city. What currency does its country use?",
    ),
    ("sole_neighbour", "capital"): (
        "What is the capital of the only country that shares a land border with {s}?",
        "Which city is the capital of the sole land neighbour of {s}?",
        "{s} borders only one country by land. What is that country's capital?",
    ),
    ("sole_neighbour", "currency"): (
        "What is the currency of the only country that shares a land border with {s}?",
        "Which currency is used in the sole land neighbour of {s}?",
        "{s} borders only one country by land. What currency does that country use?",
    ),
}

RELATION_PAIRS: tuple[tuple[str, str], ...] = tuple(TWO_HOP_TEMPLATES)
