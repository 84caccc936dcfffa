"""Our own few-shot exemplars (METHOD.md §6.4) and the facts they use, which the builder keeps out of test items.

- `ANSWER_FIRST`: "Q: ...\\nA: ..." single-hop exemplars; the default prompt prefixes the first three.
- `COT_EXEMPLARS`: worked two-hop Question / Thoughts / Answer exemplars for few-shot chain of thought.

Every fact an exemplar states is listed in `EXEMPLAR_FACTS` as (relation id, subject name); the builder drops any
item with a hop on one of them, so no test item's fact appears in a prompt prefix.
"""

from __future__ import annotations

from typing import NamedTuple


class QA(NamedTuple):
    question: str
    answer: str


class CoTExemplar(NamedTuple):
    question: str
    thoughts: str
    answer: str


ANSWER_FIRST: tuple[QA, ...] = (
    QA("What is the capital of Australia?", "Canberra"),
    QA("In which country is the city of Toronto?", "Canada"),
    QA("Which language is most widely spoken in Brazil?", "Portuguese"),
    QA("What is the currency of Switzerland?", "Swiss Franc"),
    QA("On which continent is Kenya?", "Africa"),
)

COT_EXEMPLARS: tuple[CoTExemplar, ...] = (
    CoTExemplar("What is the currency of the country where Toronto is located?",
                "Toronto is a city in Canada. The currency of Canada is the Canadian Dollar.", "Canadian Dollar"),
    CoTExemplar("On which continent is the country whose capital is Canberra?",
                "Canberra is the capital of Australia. Australia is in Oceania.", "Oceania"),
    CoTExemplar("What is the capital of the country where Rio de Janeiro is located?",
                "Rio de Janeiro is a city in Brazil. The capital of Brazil is Brasília.", "Brasília"),
    CoTExemplar("Which language is most widely spoken in the only country that shares a land border with Portugal?",
                "The only country that shares a land border with Portugal is Spain. The most widely spoken language "
                "in Spain is Spanish.", "Spanish"),
)

# (relation id, subject name, answer) of every fact stated above.
EXEMPLAR_FACTS: tuple[tuple[str, str, str], ...] = (
    ("capital", "Australia", "Canberra"),
    ("city_country", "Toronto", "Canada"),
    ("language", "Brazil", "Portuguese"),
    ("currency", "Switzerland", "Swiss Franc"),
    ("continent", "Kenya", "Africa"),
    ("currency", "Canada", "Canadian Dollar"),
    ("capital_of", "Canberra", "Australia"),
    ("continent", "Australia", "Oceania"),
    ("city_country", "Rio de Janeiro", "Brazil"),
    ("capital", "Brazil", "Brasília"),
    ("sole_neighbour", "Portugal", "Spain"),
    ("language", "Spain", "Spanish"),
)
