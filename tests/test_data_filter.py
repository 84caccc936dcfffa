"""The known-facts filter: k per hop, caching per prompt, counts; prefix-shared decoding; SmolLM2 on a sample
(through `jaxkn.generate.text_generator`)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from jaxkn.data import (
    PromptStyle,
    TwoHopItem,
    builtin_items,
    filter_known,
    format_prompt,
    relation_answers,
    shared_prefix,
)
from jaxkn.generate import common_prefix_length, greedy_generate, shared_prefix_tokens, text_generator


def _item(case_id, city, country, capital):
    return TwoHopItem(
        case_id=case_id, two_hop=f"What is the capital of the country where {city} is?",
        fact1_query=(f"Where is {city}?", f"{city} is in which country?", f"Which country has {city}?"),
        fact1_ans=country,
        fact2_query=(f"Capital of {country}?", f"What is the capital of {country}?"), fact2_ans=capital,
        two_hop_id=((city, "city_country", country), (country, "capital", capital)),
        two_hop_label=((city, "country", country), (country, "capital", capital)))


ITEMS = [_item(0, "Osaka", "Japan", "Tokyo"), _item(1, "Kyoto", "Japan", "Tokyo"),
         _item(2, "Lyon", "France", "Paris"), _item(3, "Juba", "South Sudan", "Juba"),
         _item(4, "Omdurman", "Sudan", "Khartoum")]
# What the fake model answers, per question (anything else: "I don't know").
ANSWERS = {"Where is Osaka?": "Japan", "Osaka is in which country?": "Japan", "Where is Kyoto?": "China",
           "Kyoto is in which country?": "Japan", "Where is Lyon?": "France", "Lyon is in which country?": "Paris",
           "Capital of Japan?": "Tokyo", "What is the capital of Japan?": "Tokyo\nQ: more", "Capital of France?": "Paris",
           "Where is Omdurman?": "South Sudan", "Omdurman is in which country?": "South Sudan",
           "Where is Juba?": "South Sudan", "Capital of South Sudan?": "Juba", "Capital of Sudan?": "Khartoum"}


class FakeModel:
    def __init__(self):
        self.calls = []

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        return [" " + ANSWERS.get(p.split("Q: ")[-1].split("\nA:")[0], "I don't know") for p in prompts]


def test_filter_k_counts_and_cache():
    model = FakeModel()
    result = filter_known(ITEMS, model, k=1, batch_size=4)
    assert [it.case_id for it in result.kept] == [0, 1, 2, 3]  # Omdurman: "South Sudan" is not "Sudan"
    assert result.pairs == {"city_country->capital": {"kept": 4, "total": 5}}
    assert result.relations["capital"] == {"queries": 8, "correct": 5, "facts": 4, "known": 4}
    assert result.known[("city_country", "Kyoto", "Japan")] == 1
    prompts = [p for call in model.calls for p in call]
    assert len(prompts) == len(set(prompts)) == 5 * 3 + 4 * 2  # Japan's hop 2 asked once for two items
    assert all(len(call) <= 4 for call in model.calls)
    strict = filter_known(ITEMS, model, k=2, cache=result.cache)
    assert len(model.calls) == len(prompts) // 4 + 1  # everything came from the cache
    assert [it.case_id for it in strict.kept] == [0]  # Kyoto 1/3; Lyon 1/3; France's capital has 1/2
    assert strict.settings == {"k": 2, "style": PromptStyle().as_dict(), "max_queries": None}
    assert set(result.cache) == set(strict.cache)
    frozen = dict(result.cache)
    filter_known(ITEMS[:1], model, k=1, cache=frozen, style=PromptStyle(shots=0))
    assert frozen == result.cache  # the caller's cache is not mutated


def test_filter_options():
    model = FakeModel()
    one = filter_known(ITEMS, model, max_queries=1)
    assert all(p.endswith(("Where is Osaka?\nA:", "Capital of Japan?\nA:")) or "Osaka" not in p for p in one.cache)
    assert one.relations["city_country"]["queries"] == 5
    lenient = filter_known(ITEMS, model, competitors={})  # no competing answers: "Sudan" in "South Sudan" counts
    assert 4 in [it.case_id for it in lenient.kept]
    with pytest.raises(ValueError, match="k must be at least 1"):
        filter_known(ITEMS, model, k=0)
    with pytest.raises(ValueError, match="returned 0 texts for"):
        filter_known(ITEMS, lambda ps: [])
    assert "kept 4 of 5 items" in filter_known(ITEMS, model).summary()


def test_shared_prefix_found_on_tokens_decodes_like_plain(tiny_models):
    _, cfg, params = tiny_models["llama3"]
    rng = random.Random(0)
    shared = [rng.randrange(1, cfg.vocab_size) for _ in range(12)]
    prompts = [shared + [rng.randrange(1, cfg.vocab_size) for _ in range(n)] for n in (2, 5, 3, 9)]
    assert common_prefix_length(prompts) == 12
    # The hint caps the shared part; every row keeps two own tokens (row 0 has only two after the 12).
    assert shared_prefix_tokens(prompts, shared + [0, 0]) == shared[:12]
    assert shared_prefix_tokens([p + [1, 2] for p in prompts], shared[:9]) == shared[:9]
    plain = greedy_generate(params, cfg, prompts, 6)
    assert greedy_generate(params, cfg, prompts, 6, prefix=shared_prefix_tokens(prompts)) == plain
    stop = plain[0][2]
    assert greedy_generate(params, cfg, prompts, 6, stop_ids=[stop], prefix=shared) == \
        greedy_generate(params, cfg, prompts, 6, stop_ids=[stop])
    assert shared_prefix_tokens([p[:9] for p in prompts]) is None  # 7 < MIN_SHARED: nothing worth sharing
    short = [p[:10] for p in prompts]  # rows of exactly two own tokens
    assert greedy_generate(params, cfg, short, 3, prefix=shared_prefix_tokens(short)) == \
        greedy_generate(params, cfg, short, 3)


def test_shared_prefix_mistral_window(tiny_models):
    _, cfg, params = tiny_models["mistral"]  # sliding window 4 < prefix: positions must be exact
    rng = np.random.RandomState(1)
    shared = list(rng.randint(1, cfg.vocab_size, 10))
    prompts = [shared + list(rng.randint(1, cfg.vocab_size, n)) for n in (3, 6)]
    assert greedy_generate(params, cfg, prompts, 5, prefix=shared) == greedy_generate(params, cfg, prompts, 5)


@pytest.mark.slow
def test_smollm2_filter_sample(smollm2):
    cfg, params, tokenizer = smollm2
    items = builtin_items()
    # Ten well-known countries (a 135M model misses most capitals of a random sample: see the README).
    countries = ("Japan", "France", "Germany", "Italy", "Canada", "China", "Russia", "Spain", "Egypt", "Mexico")
    by_country = {it.fact1_ans: it for it in items if it.two_hop_id[0][1] == "city_country"
                  and it.two_hop_id[1][1] == "capital"}
    sample = [by_country[c] for c in countries]
    style = PromptStyle()
    generate = text_generator(cfg, params, tokenizer, max_new_tokens=6, batch_size=20,
                              shared_prefix=shared_prefix(style))
    # One query per hop: 10 city -> country and 10 country -> capital prompts, one batch.
    result = filter_known(sample, generate, k=1, max_queries=1, competitors=relation_answers(items))
    assert len(result.cache) == 20
    assert all(format_prompt(it.fact2_query[0], style) in result.cache for it in sample)
    print(result.summary())
    assert result.relations["capital"]["correct"] >= 4  # >= 40% of the capital queries
    assert result.kept and result.pairs["city_country->capital"]["total"] == 10


class _CharTokenizer:
    """One id per character of a small alphabet (id 0 is padding), enough for text in and text out."""

    ALPHABET = "abcdefghijklmnopqrstuvwxyz :?\n"
    eos_id = None

    def encode(self, text):
        return [self.ALPHABET.index(c) + 1 for c in text.lower() if c in self.ALPHABET]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.ALPHABET[i - 1] if 0 < i <= len(self.ALPHABET) else "#" for i in ids)


def test_text_generator_batches_and_shares_the_prefix(tiny_models):
    _, cfg, params = tiny_models["llama2"]
    tokenizer = _CharTokenizer()
    shots = "q: where is osaka?\na: japan\n\n"
    prompts = [shots + f"q: where is {city}?\na:" for city in ("lyon", "kyoto", "juba")]
    plain = text_generator(cfg, params, tokenizer, max_new_tokens=5, batch_size=2, stop_at_newline=False)(prompts)
    want = [tokenizer.decode(ids) for ids in greedy_generate(params, cfg, [tokenizer.encode(p) for p in prompts], 5)]
    assert plain == want  # the last batch of one prompt padded to two does not change it
    shared = text_generator(cfg, params, tokenizer, max_new_tokens=5, batch_size=2, stop_at_newline=False,
                            shared_prefix=shots)
    assert shared(prompts) == plain
    first = text_generator(cfg, params, tokenizer, max_new_tokens=5, batch_size=2, shared_prefix=shots)(prompts)
    assert first == [next((line for line in t.splitlines() if line.strip()), "") for t in plain]
