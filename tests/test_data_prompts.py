"""Prompt formatting: plain, answer-first shots, CoT settings, chat templates, the shared prefix."""

from __future__ import annotations

import dataclasses

import pytest

from jaxkn.data import (
    ANSWER_FIRST,
    COT_EXEMPLARS,
    COT_STYLES,
    PromptStyle,
    builtin_items,
    format_chat,
    format_plain,
    format_prompt,
    prompt_parts,
    shared_prefix,
)
from jaxkn.tokenizer import Tokenizer

Q = "What is the capital of Japan?"
# SmolLM2-Instruct's template, simplified: a default system turn, then each message as <|im_start|>role ... .
TEMPLATE = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nBe helpful."
            "<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def chat_tokenizer():
    import tokenizers

    return Tokenizer(tokenizers.Tokenizer(tokenizers.models.WordLevel({"x": 0}, unk_token="x")),
                     chat_template=TEMPLATE)


def test_plain_and_default():
    assert format_plain(Q) == "Q: What is the capital of Japan?\nA:"
    assert format_prompt(Q, PromptStyle(shots=0)) == format_plain(Q)
    prompt = format_prompt(Q)  # default: three answer-first shots
    assert prompt.startswith("Q: What is the capital of Australia?\nA: Canberra\n\nQ: ")
    assert prompt.endswith("\n\nQ: What is the capital of Japan?\nA:")
    assert prompt.count("\nA:") == 4 and all(f"A: {e.answer}\n" in prompt for e in ANSWER_FIRST[:3])


def test_prefix_is_shared():
    for style in (PromptStyle(), PromptStyle(shots=5), COT_STYLES["few_shot"], COT_STYLES["zero_shot"]):
        prefix = shared_prefix(style)
        for q in (Q, "In which country is Osaka?"):
            assert prompt_parts(q, style) == (prefix, format_prompt(q, style)[len(prefix):])
            assert format_prompt(q, style).startswith(prefix) and q in format_prompt(q, style)[len(prefix):]
    assert shared_prefix(PromptStyle(shots=0)) == ""


def test_cot_settings():
    zero = format_prompt(Q, COT_STYLES["zero_shot"])
    assert zero == "Q: What is the capital of Japan?\nA: Let's think step by step."
    few = format_prompt(Q, COT_STYLES["few_shot"])
    assert len(COT_EXEMPLARS) >= 3 and few.count("Answer: ") == 3 and few.count("Thoughts:") == 4
    assert few.endswith(f"Question: {Q}\nThoughts:")
    for e in COT_EXEMPLARS[:3]:
        assert f"Question: {e.question}\nThoughts: {e.thoughts}\nAnswer: {e.answer}\n\n" in few


def test_style_validation_and_record():
    with pytest.raises(ValueError, match="zero-shot CoT takes no exemplars"):
        PromptStyle(shots=3, cot="zero_shot")
    with pytest.raises(ValueError, match="few-shot CoT needs exemplars"):
        PromptStyle(shots=0, cot="few_shot")
    with pytest.raises(ValueError, match="unknown cot mode"):
        PromptStyle(cot="tree")
    with pytest.raises(ValueError, match="shots=9 out of range"):
        PromptStyle(shots=9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PromptStyle().shots = 1
    assert PromptStyle().as_dict() == {"shots": 3, "chat": False, "cot": "none"}
    with pytest.raises(ValueError, match="needs the tokenizer"):
        format_prompt(Q, PromptStyle(chat=True))


def test_chat_template(chat_tokenizer):
    assert format_chat(chat_tokenizer, Q) == (
        "<|im_start|>system\nBe helpful.<|im_end|>\n<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n"
        "<|im_start|>assistant\n")
    style = PromptStyle(shots=3, chat=True)
    prefix, body = prompt_parts(Q, style, chat_tokenizer)
    assert prefix.count("<|im_start|>assistant\nCanberra<|im_end|>") == 1 and prefix.count("<|im_start|>user") == 3
    assert body == f"<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n"
    assert shared_prefix(style, chat_tokenizer) == prefix
    few = format_prompt(Q, PromptStyle(shots=3, chat=True, cot="few_shot"), chat_tokenizer)
    assert few.endswith(f"<|im_start|>user\nQuestion: {Q}<|im_end|>\n<|im_start|>assistant\n")
    assert "Thoughts: Toronto is a city in Canada." in few


def test_exemplar_questions_are_not_test_questions():
    questions = {q for it in builtin_items() for q in (it.two_hop, *it.two_hop_paraphrases, *it.fact1_query,
                                                       *it.fact2_query)}
    assert not questions & {e.question for e in ANSWER_FIRST}
    assert not questions & {e.question for e in COT_EXEMPLARS}
