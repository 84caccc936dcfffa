"""The two-hop study end to end through its CLI: a --limit 5 smoke run on SmolLM2, resume after SIGKILL, and
the same command on a tiny random LLaMA checkpoint folder.

Settings are reduced where that proves the same thing (2 paraphrases per hop, 2 integration points, short CoT):
the code paths are the default run's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxkn.experiments import two_hop
from jaxkn.experiments.analysis import analyse
from jaxkn.experiments.settings import StudyConfig
from jaxkn.experiments.store import ResultsFolderError, ResultStore

FAST = ["--queries-per-hop", "2", "--steps", "2", "--tolerance", "none", "--cot-tokens", "8", "--answer-tokens", "5",
        "--bootstrap", "50", "--batch-size", "8", "--matched-draws", "10"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smollm2):
    out = tmp_path_factory.mktemp("smoke")
    assert two_hop.main(["--limit", "5", "--out", str(out), *FAST]) == 0
    return out


def _settings(out: Path) -> StudyConfig:
    return StudyConfig.from_dict(json.loads((out / "summary.json").read_text())["settings"])


@pytest.mark.slow
def test_smoke_run_accounts_for_every_item(smoke_run):
    summary = json.loads((smoke_run / "summary.json").read_text())
    table = pd.read_csv(smoke_run / "items.csv")
    items = sorted(p.stem for p in (smoke_run / "items").glob("*.json"))
    assert len(table) == summary["numbers"]["n_items"] == summary["filter"]["studied"] == len(items) == 5
    assert sorted(map(str, table["case_id"])) == items
    for name in ("report.md", "items.parquet", "facts.parquet", "figures/levels.png", "figures/tau_curve.png",
                 "figures/interventions.png", "figures/shared_neurons.png", "figures/kn_counts_per_layer.png"):
        assert (smoke_run / name).stat().st_size > 0, name
    report = (smoke_run / "report.md").read_text()
    for claim in range(1, 6):
        assert f"## Claim {claim}" in report
    # every setting is recorded, and every number is recomputable from the table alone
    assert summary["settings"]["attribution"]["steps"] == 2 and summary["settings"]["threshold_t"] == 0.2
    assert summary["settings"]["preset"] == "converged" and "tolerance" in summary["settings"]["preset_overrides"]
    s = _settings(smoke_run)
    again = json.loads(json.dumps(analyse(pd.read_parquet(smoke_run / "items.parquet"), s)))
    assert again == summary["numbers"]
    assert set(summary["attribution"]["completeness"]) >= {"max", "median", "flagged_layers", "points_per_layer"}
    assert all({"null", "score"} <= set(v) for v in summary["verdicts"].values())
    assert summary["controls"] and all("neuron" in n and "facts" in n for n in summary["neurons"]["shared"])
    # peak memory is read as each stage ends: the process's running maximum, so it never falls
    peaks = summary["peak_rss_gib"]
    assert set(peaks) == {"filter", "facts", "items"} and 0 < peaks["filter"] <= peaks["facts"] <= peaks["items"]
    assert "Peak resident memory" in report


@pytest.mark.slow
def test_rerun_without_resume_is_refused(smoke_run):
    with pytest.raises(ResultsFolderError, match="--resume"):
        ResultStore(smoke_run, json.loads((smoke_run / "run.json").read_text())["fingerprint"], "x", resume=False)
    with pytest.raises(ResultsFolderError, match="another run"):
        ResultStore(smoke_run, "another-fingerprint", "x", resume=True)


def _cli(out: Path, *extra: str) -> subprocess.Popen:
    # killed on purpose: no persistent compilation cache (JAX writes entries in place; see jaxkn.runtime)
    env = dict(os.environ, PYTHONPATH=str(REPO), JAXKN_XLA_CACHE="off")
    return subprocess.Popen([sys.executable, "-m", "jaxkn.experiments.two_hop", "--limit", "5", "--out", str(out),
                             *FAST, *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _item_files(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "items").glob("*.json")} if (out / "items").is_dir() else {}


@pytest.mark.slow
def test_resume_after_sigkill_recomputes_nothing_and_matches(smoke_run, tmp_path):
    out = tmp_path / "killed"
    # Start from the smoke run's filter and fact files (valid here: the fact cache key holds every attribution
    # setting), so the subprocess spends its time in the per-item stage, where it is killed.
    (out / "facts").mkdir(parents=True)
    for name in ("run.json", "filter.json", "filter_cache.json"):  # run.json: the folder is this run's
        shutil.copy(smoke_run / name, out / name)
    for fact in (smoke_run / "facts").glob("*.*"):
        if not fact.name.startswith("."):
            shutil.copy(fact, out / "facts" / fact.name)
    proc = _cli(out)
    deadline = time.time() + 400
    while len(_item_files(out)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read()[-3000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _item_files(out)
    facts_before = {p.name: p.stat().st_mtime_ns for p in (out / "facts").glob("*.json")}
    assert 2 <= len(before) < 5
    assert not list(out.rglob("*.tmp")) or all(p.name.startswith(".") for p in out.rglob("*.tmp"))
    done = _cli(out, "--resume")
    log = done.communicate(timeout=600)[0]
    assert done.returncode == 0, log[-3000:]
    after = _item_files(out)
    assert len(after) == 5
    assert all(after[name] == t for name, t in before.items())  # nothing done was recomputed
    assert all((out / "facts" / n).stat().st_mtime_ns == t for n, t in facts_before.items())
    for name in after:  # the same results as the uninterrupted run (batching differs: float32 tolerance)
        _assert_same(json.loads((out / "items" / name).read_text()),
                     json.loads((smoke_run / "items" / name).read_text()))


def _assert_same(a, b, path="item"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert np.isclose(a, b, rtol=1e-3, atol=1e-5), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _dataset_the_model_knows(folder: Path, tmp: Path) -> Path:
    """Built-in items whose hop answers are replaced by what the model itself answers (a random model knows
    nothing else), so every stage of the study runs on it."""
    import jaxkn
    from jaxkn.data import builtin_items, format_prompt, normalize, save_items
    from jaxkn.generate import text_generator

    cfg, params, tokenizer = jaxkn.load_model(folder)
    generate = text_generator(cfg, params, tokenizer, max_new_tokens=3, batch_size=4)
    items = []
    for item in builtin_items()[:12]:
        said = generate([format_prompt(item.fact1_query[0]), format_prompt(item.fact2_query[0])])
        if all(normalize(a) for a in said):
            items.append(dataclasses.replace(item, fact1_ans=said[0].strip(), fact2_ans=said[1].strip(),
                                             fact1_ans_alias=(), fact2_ans_alias=(), two_hop_ans_alias=()))
    assert len(items) >= 2, "the tiny model gave no usable answers"
    return save_items(items[:4], tmp / "known.json")


@pytest.mark.slow
def test_same_command_on_a_tiny_llama_checkpoint(tiny_checkpoint, tmp_path):
    out = tmp_path / "tiny"
    # on the built-in data a random model knows no fact: the report says so plainly
    assert two_hop.main(["--model", str(tiny_checkpoint), "--limit", "2", "--out", str(out), *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_id"].startswith(str(tiny_checkpoint.resolve()))
    assert summary["filter"]["studied"] == 0 and "No item passed the filter" in (out / "report.md").read_text()
    # on items it "knows", the same command runs every stage
    data = _dataset_the_model_knows(tiny_checkpoint, tmp_path)
    out = tmp_path / "tiny_known"
    assert two_hop.main(["--model", str(tiny_checkpoint), "--dataset", str(data), "--limit", "2", "--out", str(out),
                         *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["filter"]["studied"] == len(list((out / "items").glob("*.json"))) >= 1
    assert "## Claim 5" in (out / "report.md").read_text()
