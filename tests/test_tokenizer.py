"""jaxkn.Tokenizer built from GGUF metadata (no torch) vs transformers' own GGUF tokenizer."""

from __future__ import annotations

import pytest

from jaxkn.tokenizer import Tokenizer, TokenizerError

STRINGS = [
    "The capital of France is", " Paris", "Paris", "  two leading spaces", "\tTab and\nnewline\n\n",
    "What is the chemical symbol of gold?", "Q: Who wrote Paradiso?\nA: Dante Alighieri",
    "Hello, world! (Really?) -- yes; \"quoted\" 'single' [x] {y} <z>", "It's, they're, we'll, I'd, you've",
    "1234567890 3.14159 -42 1,000,000 2024-11-25", "café naïve Ærø Straße ĳ", "東京は日本の首都です", "Москва",
    "emoji 🤖🎉 and ZWJ 👩‍👩‍👧", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>plain<|im_end|>", "text<repo_name>more", "", " ", "    ", "a" * 50, "def f(x):\n    return x**2\n",
    "https://example.com/path?q=1&r=2#frag", "São Paulo, Zürich, Kraków, Reykjavík",
]
MESSAGES = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of Japan?"},
     {"role": "assistant", "content": "Tokyo."}, {"role": "user", "content": "And Italy?"}],
]


@pytest.fixture(scope="module")
def gguf_tokenizer():
    from jaxkn.convert.gguf import open_gguf
    from jaxkn.convert.smollm2 import gguf_path

    return Tokenizer.from_gguf_metadata(open_gguf(gguf_path()))


@pytest.mark.parametrize("text", STRINGS)
def test_encode_decode_match_transformers(gguf_tokenizer, smollm2_hf_tokenizer, text):
    ids = gguf_tokenizer.encode(text)
    assert ids == smollm2_hf_tokenizer(text, add_special_tokens=True).input_ids
    assert gguf_tokenizer.decode(ids) == smollm2_hf_tokenizer.decode(ids) == text
    assert gguf_tokenizer.decode(ids, skip_special_tokens=True) == smollm2_hf_tokenizer.decode(
        ids, skip_special_tokens=True)


def test_special_tokens(gguf_tokenizer, smollm2_hf_tokenizer):
    ref = smollm2_hf_tokenizer
    assert (gguf_tokenizer.bos_id, gguf_tokenizer.eos_id, gguf_tokenizer.pad_id) == (
        ref.bos_token_id, ref.eos_token_id, ref.pad_token_id) == (1, 2, 2)
    assert gguf_tokenizer.vocab_size == len(ref) == 49152
    assert gguf_tokenizer.encode("<|im_start|>") == [1]
    assert gguf_tokenizer.encode("hi", add_bos=True) == [1] + gguf_tokenizer.encode("hi")
    assert len(gguf_tokenizer.encode(" Paris")) == 1


@pytest.mark.parametrize("messages", MESSAGES)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(gguf_tokenizer, smollm2_hf_tokenizer, messages, add_generation_prompt):
    ours = gguf_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    ref = smollm2_hf_tokenizer.apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)
    assert ours == ref


def test_save_load_round_trip(gguf_tokenizer, tmp_path):
    gguf_tokenizer.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.vocab_size, loaded.chat_template) == (
        gguf_tokenizer.bos_id, gguf_tokenizer.eos_id, gguf_tokenizer.pad_id, gguf_tokenizer.vocab_size,
        gguf_tokenizer.chat_template)
    for text in STRINGS:
        assert loaded.encode(text) == gguf_tokenizer.encode(text)


def test_saved_folder_reads_in_transformers(gguf_tokenizer, tmp_path):
    import transformers

    gguf_tokenizer.save(tmp_path)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in STRINGS[:8]:
        assert ref(text).input_ids == gguf_tokenizer.encode(text)


def test_no_chat_template_is_a_clear_error(gguf_tokenizer):
    bare = Tokenizer(gguf_tokenizer.backend, bos_token="<|im_start|>", chat_template=None)
    with pytest.raises(TokenizerError, match="no chat template"):
        bare.apply_chat_template(MESSAGES[0])


def test_other_gguf_tokenizer_models_are_refused():
    class Field:
        def __init__(self, value):
            self.value = value

        def contents(self):
            return self.value

    class Reader:
        fields = {"tokenizer.ggml.model": Field("llama"), "tokenizer.ggml.tokens": Field(["a"])}

    with pytest.raises(TokenizerError, match="tokenizer model 'llama' is not supported"):
        Tokenizer.from_gguf_metadata(Reader())


def test_missing_tokenizer_json_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        Tokenizer.from_hf_dir(tmp_path)
