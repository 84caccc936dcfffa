"""Hub names ("org/name") resolve offline through the local HF cache, for load_model, the convert CLI and the study."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxkn.convert.hub import ModelNotFoundError, hub_cache_dir, resolve_model
from jaxkn.convert.loading import load_model

COMMIT = "abc"


def _tiny_tokenizer(folder, vocab_size: int) -> None:
    """A word-level tokenizer.json (+ tokenizer_config.json) covering the tiny model's vocabulary."""
    import tokenizers

    vocab = {"<unk>": 0, "</s>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "add_bos_token": False}))


def _as_blobs(repo, snapshot) -> None:
    """Moves each snapshot file into blobs/ and links it back, as huggingface_hub stores downloads."""
    (repo / "blobs").mkdir()
    for f in sorted(snapshot.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        f.rename(blob)
        f.symlink_to(os.path.relpath(blob, snapshot))


@pytest.fixture(scope="module")
def hub_cache(tiny_models, tmp_path_factory):
    """A hub cache holding org/tiny (the tiny llama2) at refs/main -> snapshots/abc, files as blob symlinks."""
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / "models--org--tiny"
    snapshot = repo / "snapshots" / COMMIT
    hf = tiny_models["llama2"][0]
    hf.save_pretrained(snapshot)
    _tiny_tokenizer(snapshot, hf.config.vocab_size)
    _as_blobs(repo, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


@pytest.fixture
def offline_cache(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_cache


def test_hub_name_resolves_to_the_snapshot_huggingface_hub_finds(offline_cache):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    want = huggingface_hub.snapshot_download("org/tiny", cache_dir=offline_cache, local_files_only=True)
    assert resolve_model("org/tiny") == offline_cache / "models--org--tiny" / "snapshots" / COMMIT
    assert resolve_model("org/tiny").samefile(want)


@pytest.mark.parametrize("env", [
    {"HF_HUB_CACHE": "{tmp}/direct"},
    {"HF_HOME": "{tmp}/home"},
    {"HF_HOME": "{tmp}/home", "HF_HUB_CACHE": "{tmp}/direct"},
    {"XDG_CACHE_HOME": "{tmp}/xdg"},
    {"HOME": "{tmp}/user"},
])
def test_cache_folder_follows_the_same_environment_as_huggingface_hub(env, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value.format(tmp=tmp_path))
    # huggingface_hub reads its environment once, at import: ask a fresh interpreter.
    code = "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)"
    want = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert hub_cache_dir() == type(hub_cache_dir())(want)


def test_load_model_by_hub_name_equals_loading_the_folder(offline_cache, tiny_models):
    _, _, params = tiny_models["llama2"]
    cfg, got, tokenizer = load_model("org/tiny")
    assert cfg.n_layers == 3 and tokenizer is not None and tokenizer.eos_id == 1
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_study_loads_a_hub_name(offline_cache, tiny_models):
    from jaxkn.experiments.pipeline import load
    from jaxkn.experiments.settings import StudyConfig

    cfg, params, tokenizer, model_id = load(StudyConfig(model="org/tiny"))
    assert cfg == tiny_models["llama2"][1] and tokenizer.vocab_size == cfg.vocab_size and model_id


def test_convert_cli_by_hub_name(offline_cache, tiny_models, tmp_path, capsys):
    from jaxkn.convert.__main__ import main

    assert main(["org/tiny", str(tmp_path / "ck")]) == 0
    assert "wrote" in capsys.readouterr().out
    cfg, params, tokenizer = load_model(tmp_path / "ck")
    assert cfg == tiny_models["llama2"][1] and tokenizer is not None
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(tiny_models["llama2"][2])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_revision_by_ref_or_commit_hash(tmp_path):
    repo = tmp_path / "models--org--m"
    main, dev = "a" * 40, "b" * 40
    for commit in (main, dev):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(main + "\n")  # a trailing newline is tolerated
    (repo / "refs" / "dev").write_text(dev)
    assert resolve_model("org/m", cache_dir=tmp_path).name == main
    assert resolve_model("org/m", revision="dev", cache_dir=tmp_path).name == dev
    assert resolve_model("org/m", revision=dev, cache_dir=tmp_path).name == dev


def test_gguf_repository_resolves_to_its_single_file(tmp_path):
    snapshot = tmp_path / "models--org--q" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (tmp_path / "models--org--q" / "refs").mkdir()
    (tmp_path / "models--org--q" / "refs" / "main").write_text(COMMIT)
    (snapshot / "model-q4.gguf").write_bytes(b"GGUF")
    assert resolve_model("org/q", cache_dir=tmp_path) == snapshot / "model-q4.gguf"
    (snapshot / "model-q8.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError, match=r"several \.gguf files \(model-q4.gguf, model-q8.gguf\)"):
        resolve_model("org/q", cache_dir=tmp_path)


def test_existing_path_stays_a_path(offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "tiny").mkdir(parents=True)
    assert resolve_model("org/tiny") == type(tmp_path)("org/tiny")


def test_missing_model_names_the_cache_searched_and_what_to_do(offline_cache):
    folder = offline_cache / "models--org--absent"
    with pytest.raises(ModelNotFoundError, match="not a local path") as err:
        load_model("org/absent")
    message = str(err.value)
    assert str(folder) in message and "huggingface-cli download org/absent" in message and "HF_HUB_CACHE" in message
    with pytest.raises(ModelNotFoundError, match="revision 'v2'"):
        resolve_model("org/tiny", revision="v2")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("/no/such/../model")
