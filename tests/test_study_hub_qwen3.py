"""The study's own command on a Qwen3 named by its Hub id ("org/tiny-qwen3"), read offline from the HF cache.

The model is a tiny random transformers Qwen3 (float32, per-head q/k norm, tied embeddings) saved in the cache's
own layout (refs/main -> snapshots/<commit>/, files as symlinks into blobs/) with a small byte-level BPE
tokenizer trained on the study's prompts, so the run needs neither SmolLM2 nor the network. Its dataset is
built-in items whose hop answers are replaced by what the model itself answers (a random model knows nothing
else), so every stage of the study runs. The Qwen3 (saved in shards) and a tiny Gemma 2 (window 4 on alternate
layers) are loaded from the same cache through `jaxkn.load_model` and compared with transformers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # Qwen's: <|endoftext|> ends a text
FAST = ["--queries-per-hop", "2", "--steps", "2", "--cot-tokens", "8", "--answer-tokens", "5", "--bootstrap", "50",
        "--batch-size", "2"]
SIZE = dict(hidden_size=32, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, max_position_embeddings=1024,
            # At transformers' default 0.02 a random tied model only repeats the prompt's last token (":"), so it
            # "knows" no answer at all; at 0.3 the layers matter and its answers differ from prompt to prompt.
            initializer_range=0.3)


def _corpus(n_items: int = 40) -> list[str]:
    """Every prompt text the study writes for the first `n_items` built-in items (exemplars included)."""
    from jaxkn.data import builtin_items, format_prompt
    from jaxkn.data.prompts import COT_STYLES

    texts = []
    for item in builtin_items()[:n_items]:
        for q in (*item.fact1_query, *item.fact2_query, item.two_hop):
            texts += [format_prompt(q, style) for style in COT_STYLES.values()]
        texts += [item.fact1_ans, item.fact2_ans, item.answer]
    return texts


def _small_tokenizer(vocab_size: int = 512):
    """A jaxkn Tokenizer: byte-level BPE (any text encodes, "\\n" is one token) trained on the study's prompts."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from jaxkn.tokenizer import Tokenizer

    backend = tokenizers.Tokenizer(models.BPE(fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_corpus(), trainer=trainer)
    return Tokenizer(backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _save_in_cache(cache: Path, repo_id: str, hf_model, tokenizer, **save) -> Path:
    """Writes `hf_model` + `tokenizer` as huggingface_hub stores a download; returns the snapshot folder."""
    repo = cache / "--".join(["models", *repo_id.split("/")])
    snapshot = repo / "snapshots" / COMMIT
    hf_model.save_pretrained(snapshot, **save)
    tokenizer.save(snapshot)
    (repo / "blobs").mkdir()
    for f in sorted(snapshot.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        f.rename(blob)
        f.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def _tiny(family: str, vocab_size: int, eos_id: int, **extra):
    import torch
    import transformers

    config_cls, model_cls = {"qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
                             "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM)}[family]
    config = config_cls(vocab_size=vocab_size, eos_token_id=eos_id, bos_token_id=eos_id, pad_token_id=eos_id,
                        **SIZE, **extra)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return model_cls(config).eval()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(cache, tokenizer, {repo_id: hf_model}): a tiny Qwen3 and a tiny Gemma 2 in a tmp HF cache."""
    cache = tmp_path_factory.mktemp("hub")
    tokenizer = _small_tokenizer()
    models = {"org/tiny-qwen3": _tiny("qwen3", tokenizer.vocab_size, tokenizer.eos_id, tie_word_embeddings=True),
              "org/tiny-gemma2": _tiny("gemma2", tokenizer.vocab_size, tokenizer.eos_id, sliding_window=4)}
    # The Qwen3 in shards with an index, as larger Hub checkpoints come; the Gemma 2 in one model.safetensors.
    _save_in_cache(cache, "org/tiny-qwen3", models["org/tiny-qwen3"], tokenizer, max_shard_size="50KB")
    _save_in_cache(cache, "org/tiny-gemma2", models["org/tiny-gemma2"], tokenizer)
    return cache, tokenizer, models


@pytest.fixture
def offline(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub[0]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


def _dataset_the_model_knows(repo_id: str, out: Path) -> Path:
    """Built-in items whose hop answers are what the model itself answers to each hop's first query."""
    import jaxkn
    from jaxkn.data import builtin_items, format_prompt, normalize, save_items
    from jaxkn.generate import text_generator

    cfg, params, tokenizer = jaxkn.load_model(repo_id)
    generate = text_generator(cfg, params, tokenizer, max_new_tokens=3, batch_size=4)
    items = []
    for item in builtin_items()[:12]:
        said = generate([format_prompt(item.fact1_query[0]), format_prompt(item.fact2_query[0])])
        if all(normalize(a) for a in said):
            items.append(dataclasses.replace(item, fact1_ans=said[0].strip(), fact2_ans=said[1].strip(),
                                             fact1_ans_alias=(), fact2_ans_alias=(), two_hop_ans_alias=()))
    assert len(items) >= 2, "the tiny Qwen3 gave fewer than 2 usable answers"
    return save_items(items[:4], out / "known.json")


def test_tokenizer_gives_the_study_what_it_needs(hub):
    _, tokenizer, _ = hub
    text = "Q: In which country is Dubai?\nA: Let's think step by step. Brasília"
    assert tokenizer.decode(tokenizer.encode(text)) == text  # byte-level: nothing is lost, accents included
    assert len(tokenizer.encode("\n")) == 1 and tokenizer.eos_id == 0
    assert len(tokenizer.encode(text)) < len(text.encode()) / 2  # trained merges keep prompts short


def test_study_runs_end_to_end_on_a_qwen3_named_by_its_hub_id(offline, tmp_path):

    cache, _, _ = offline
    out = tmp_path / "run"
    # In a fresh interpreter, as a user runs it: in a long-lived test worker that had compiled many programs,
    # XLA's CPU compiler crashed (segfault) compiling this model's prefill, which it does not do alone.
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from pathlib import Path; "
              f"from test_study_hub_qwen3 import _dataset_the_model_knows, FAST; "
              f"from jaxkn.experiments import two_hop; "
              f"data = _dataset_the_model_knows('org/tiny-qwen3', Path({str(tmp_path)!r})); "
              f"sys.exit(two_hop.main(['--model', 'org/tiny-qwen3', '--dataset', str(data), '--limit', '2', "
              f"'--out', {str(out)!r}, *FAST]))")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    snapshot = (cache / "models--org--tiny-qwen3" / "snapshots" / COMMIT).resolve()
    assert len(list(snapshot.glob("model-*-of-*.safetensors"))) > 1
    assert summary["model_id"].startswith(f"{snapshot} [")  # the commit the hub name resolved to
    assert summary["settings"]["model"] == "org/tiny-qwen3"
    items = sorted(p.stem for p in (out / "items").glob("*.json"))
    assert summary["filter"]["studied"] == len(items) == 2
    report = (out / "report.md").read_text()
    assert str(snapshot) in report
    for claim in range(1, 6):
        assert f"## Claim {claim}" in report
    # The tables: items.parquet is items.csv with its types kept; facts.parquet holds every fact the items use,
    # its KN set a subset of the refined neurons, within the model's layers and width.
    table, csv = pd.read_parquet(out / "items.parquet"), pd.read_csv(out / "items.csv")
    assert list(table.columns) == list(csv.columns) and sorted(map(str, table["case_id"])) == items
    numeric = table.select_dtypes("number").columns
    assert len(numeric) > 100 and table["case_id"].dtype.kind == "i" and table["none_correct"].dtype == bool
    np.testing.assert_allclose(csv[numeric].to_numpy(float), table[numeric].to_numpy(float), rtol=1e-12)
    facts = pd.read_parquet(out / "facts.parquet")
    assert set(table["fact1"]) | set(table["fact2"]) <= set(facts["fact"])
    assert any(len(kn) for kn in facts["neurons"])
    for kn, refined in zip(facts["neurons"], facts["refined"]):
        kn, refined = {tuple(map(int, n)) for n in kn}, {tuple(map(int, n)) for n in refined}
        inside = all(0 <= l < SIZE["num_hidden_layers"] and 0 <= i < SIZE["intermediate_size"] for l, i in kn)
        assert kn <= refined and inside
    for name in items:  # single-hop levels and every CoT setting's reads for both hops, and the interventions
        record = json.loads((out / "items" / f"{name}.json").read_text())
        assert str(record["case_id"]) == name and "base" in record["interventions"] and len(record["interventions"]) > 1
        for hop in ("hop1", "hop2"):
            assert np.isfinite(record["single"][hop]["R"])
            assert all(np.isfinite(record["cot"][c]["reads"][hop]["R"]) for c in ("none", "zero_shot", "few_shot"))


@pytest.mark.parametrize("repo_id", ["org/tiny-qwen3", "org/tiny-gemma2"])
def test_model_by_hub_name_matches_transformers(offline, repo_id):
    import torch

    import jaxkn
    from jaxkn.model import forward

    _, tokenizer, models = offline
    cfg, params, loaded_tokenizer = jaxkn.load_model(repo_id)
    assert cfg.param_dtype == "float32" and cfg.vocab_size == tokenizer.vocab_size
    if repo_id == "org/tiny-qwen3":
        assert cfg.qk_norm and cfg.tie_embeddings
    else:  # Gemma 2 alternates windowed and global layers, the window shorter than the prompt below
        assert cfg.layer_types == ("sliding_attention", "full_attention") and cfg.sliding_window == 4
    text = "Q: In which country is the city of Toronto?\nA:"
    assert loaded_tokenizer.encode(text) == tokenizer.encode(text)
    tokens = np.asarray([tokenizer.encode(text)])
    got = np.asarray(forward(params, tokens, cfg).logits, np.float64)
    with torch.no_grad():
        want = models[repo_id](torch.tensor(tokens)).logits.numpy()
    err = np.abs(got - want).max() / np.abs(want).max()
    assert tokens.shape[1] > 4 and err < 1e-4, f"relative error {err:.2e}"


def test_study_on_a_name_missing_from_the_cache_says_how_to_get_it(offline, tmp_path, capsys):
    from jaxkn.experiments import two_hop

    out = tmp_path / "run"
    assert two_hop.main(["--model", "Qwen/Qwen3-absent", "--out", str(out), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "huggingface-cli download Qwen/Qwen3-absent" in err and str(offline[0]) in err
    assert "Traceback" not in err and not out.exists()  # refused before the results folder is claimed


def test_study_on_an_unsupported_family_names_it(tmp_path, monkeypatch, capsys):
    from jaxkn.experiments import two_hop

    repo = tmp_path / "hub" / "models--org--tiny-gpt2"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert two_hop.main(["--model", "org/tiny-gpt2", "--out", str(tmp_path / "run"), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "model_type='gpt2'" in err and "qwen3" in err and "Traceback" not in err
