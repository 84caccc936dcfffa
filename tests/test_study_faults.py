"""The study survives kills and bad input, and never overwrites what it did not write.

Everything runs the study's command line on a tiny random LLaMA (see `checkpoint`) and a dataset it "knows"
(hop answers replaced by what it says), with reduced settings; the code paths are the default run's. The fault
test SIGKILLs one run in every stage, watching its folder to choose the moment, resumes each time, and compares
the result byte for byte with an uninterrupted run.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_llama

from jaxkn.experiments import two_hop

REPO = Path(__file__).resolve().parents[1]
FAST = ["--queries-per-hop", "2", "--steps", "2", "--cot-tokens", "8", "--answer-tokens", "5", "--bootstrap", "50",
        "--batch-size", "2"]
N_ITEMS = 6  # three chunks of batch_size 2
POLL_S = 0.01

pytestmark = pytest.mark.slow  # the tiny checkpoint carries SmolLM2's tokenizer


def _known_items(folder: Path, n: int) -> list:
    """Built-in items whose hop answers are what the tiny random model says (it knows nothing else), generated
    as the study's filter generates them (its prompt style and shared prefix, `--answer-tokens`), so it keeps
    them all: a shorter answer can end inside a word of the generated text, which the judge does not accept."""
    import jaxkn
    from jaxkn.data import builtin_items, normalize, shared_prefix
    from jaxkn.data import format_prompt as plain_prompt
    from jaxkn.data.prompts import COT_STYLES
    from jaxkn.generate import text_generator

    cfg, params, tokenizer = jaxkn.load_model(folder)
    style = COT_STYLES["none"]
    generate = text_generator(cfg, params, tokenizer, max_new_tokens=int(FAST[FAST.index("--answer-tokens") + 1]),
                              batch_size=2, shared_prefix=shared_prefix(style) or None)

    def format_prompt(question):
        return plain_prompt(question, style)

    items = []
    for item in builtin_items()[: 3 * n]:
        said = generate([format_prompt(item.fact1_query[0]), format_prompt(item.fact2_query[0])])
        if all(normalize(a) for a in said):
            items.append(dataclasses.replace(item, fact1_ans=said[0].strip(), fact2_ans=said[1].strip(),
                                             fact1_ans_alias=(), fact2_ans_alias=(), two_hop_ans_alias=()))
        if len(items) == n:
            return items
    raise AssertionError(f"the tiny model gave usable answers for {len(items)} items, {n} needed")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, smollm2):
    """A tiny random LLaMA folder with SmolLM2's tokenizer, like conftest's `tiny_checkpoint` but with 256
    neurons per layer: the matched random null draws KN replacements from the KN's own |abar| decile of its
    layer, which 48 neurons (about 5 a decile) cannot always supply."""
    _, _, tokenizer = smollm2
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama_256"), tokenizer, intermediate_size=256)


@pytest.fixture(scope="module")
def known(checkpoint, tmp_path_factory):
    """(model folder, dataset file, its items)."""
    from jaxkn.data import save_items

    items = _known_items(checkpoint, N_ITEMS)
    return checkpoint, save_items(items, tmp_path_factory.mktemp("data") / "known.json"), items


def _argv(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--dataset", str(data), "--limit", str(N_ITEMS), "--out", str(out), *FAST, *extra]


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    """The study CLI as its own process (output to a file: a full pipe would block it)."""
    # killed on purpose: no persistent compilation cache (JAX writes entries in place; see jaxkn.runtime)
    env = dict(os.environ, PYTHONPATH=str(REPO), JAXKN_XLA_CACHE="off")
    with open(log, "a") as f:
        return subprocess.Popen([sys.executable, "-m", "jaxkn.experiments.two_hop", *argv], cwd=REPO, env=env,
                                stdout=f, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 400) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-4000:]


@dataclasses.dataclass(frozen=True)
class Folder:
    """What a run has written so far (read while it runs: every file is renamed into place whole)."""

    root: Path

    def files(self, sub: str) -> list[Path]:
        return sorted((self.root / sub).glob("*.json")) if (self.root / sub).is_dir() else []

    @property
    def n_items(self) -> int:
        return len(self.files("items"))

    @property
    def n_facts(self) -> int:
        return len(self.files("facts"))

    @property
    def stages_saved(self) -> int:
        """Batched stages saved by the chunk in flight (0 when none is)."""
        for path in self.files("partial"):
            try:
                return len(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError):  # dropped between glob and read
                return 0
        return 0

    def identities(self) -> dict[str, tuple[int, int]]:
        """Every item and fact file -> (inode, mtime_ns): a rewritten file changes both."""
        return {f"{p.parent.name}/{p.name}": (p.stat().st_ino, p.stat().st_mtime_ns)
                for sub in ("items", "facts") for p in self.files(sub)}

    def timings(self) -> dict[str, float]:
        path = self.root / "timings.json"
        return json.loads(path.read_text()) if path.is_file() else {}


# (what is in flight when it is killed, when to kill): each kill point is later in the run than the one before
KILLS: list[tuple[str, Callable[[Folder], bool]]] = [
    ("filter", lambda f: (f.root / "run.json").is_file()),
    ("facts (before the first)", lambda f: (f.root / "filter.json").is_file()),
    ("facts", lambda f: f.n_facts >= 3),
    ("items: batched stages", lambda f: f.stages_saved >= 1),
    ("items: batched stages", lambda f: f.stages_saved >= 2),
    ("items: interventions", lambda f: f.n_items >= 1),
    ("items: interventions", lambda f: f.n_items >= 3),
]


@dataclasses.dataclass
class KilledRun:
    out: Path
    reference: Path
    at_kill: list[dict]  # per kill: what the folder held
    first_seen: dict[str, tuple[int, int]]  # item/fact file -> identity when first seen
    log: Path


@pytest.fixture(scope="module")
def reference(known, tmp_path_factory) -> Path:
    """The folder of an uninterrupted run (its own process, like the killed one)."""
    model, data, _ = known
    tmp = tmp_path_factory.mktemp("reference")
    _finish(_start(_argv(model, data, tmp / "run"), tmp / "log.txt"), tmp / "log.txt")
    return tmp / "run"


@pytest.fixture(scope="module")
def killed_run(known, reference, tmp_path_factory) -> KilledRun:
    """One run killed with SIGKILL at every `KILLS` point and resumed each time, then finished."""
    model, data, _ = known
    tmp = tmp_path_factory.mktemp("faults")
    out, log = tmp / "killed", tmp / "log.txt"
    folder, first_seen, at_kill = Folder(out), {}, []
    for n, (stage, ready) in enumerate(KILLS):
        proc = _start(_argv(model, data, out, *(["--resume"] if n else [])), log)
        deadline = time.time() + 300
        while not ready(folder) and proc.poll() is None and time.time() < deadline:
            for name, identity in folder.identities().items():
                first_seen.setdefault(name, identity)
            time.sleep(POLL_S)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert alive, f"kill {n} ({stage}): the run ended before it:\n{log.read_text()[-4000:]}"
        for name, identity in folder.identities().items():
            first_seen.setdefault(name, identity)
        at_kill.append(dict(stage=stage, filter=(out / "filter.json").is_file(), facts=folder.n_facts,
                            items=folder.n_items, stages_saved=folder.stages_saved, timings=folder.timings(),
                            lock=json.loads((out / "run.lock").read_text())["pid"] == proc.pid))
    _finish(_start(_argv(model, data, out, "--resume"), log), log)
    return KilledRun(out, reference, at_kill, first_seen, log)


def test_a_run_killed_in_every_stage_resumes_to_the_uninterrupted_result(killed_run):
    kills = killed_run.at_kill
    # the kills landed in every stage: mid-filter, between/among facts, mid-chunk in both kinds of item work
    assert not kills[0]["filter"]
    assert kills[1]["filter"] and kills[1]["facts"] < 8 and 3 <= kills[2]["facts"] < 8
    assert any(k["stages_saved"] and k["items"] == 0 for k in kills)
    assert any(0 < k["items"] < N_ITEMS and k["items"] % 2 for k in kills)  # a chunk's item written, one to go
    assert all(k["lock"] for k in kills)  # each killed run left its lock behind: the next one took it over
    out, reference = killed_run.out, killed_run.reference
    assert (out / "items.csv").read_bytes() == (reference / "items.csv").read_bytes()
    for sub in ("items", "facts"):
        names = sorted(p.name for p in (out / sub).glob("*.json"))
        assert names == sorted(p.name for p in (reference / sub).glob("*.json"))
        for name in names:  # every stored number, not only what the table shows
            assert (out / sub / name).read_bytes() == (reference / sub / name).read_bytes(), f"{sub}/{name}"
    # no item or fact file was written twice: each is the file first seen
    now = Folder(out).identities()
    assert all(now[name] == identity for name, identity in killed_run.first_seen.items())
    assert not (out / "run.lock").exists() and not list((out / "partial").glob("*.json"))


def test_a_killed_runs_time_reaches_timings(killed_run):
    seen = [k["timings"] for k in killed_run.at_kill]
    # the kill in the filter's first chunk left nothing to time; from then on each stage's time is written as it
    # goes (after each unit: a kill between a unit and its tick loses that unit's time only), so the killed
    # runs' time is there and only grows
    assert seen[2]["filter"] > 0 and seen[2]["facts"] > 0
    assert next(t for t, k in zip(seen, killed_run.at_kill) if k["items"])["items"] > 0
    for before, after in zip(seen, seen[1:]):
        assert all(after.get(stage, 0) >= v for stage, v in before.items()), (before, after)
    final = Folder(killed_run.out).timings()
    assert final["facts"] > seen[2]["facts"] and final["items"] > seen[-1]["items"]
    assert sum(final.values()) > sum(seen[-1].values())


def _run_main(argv, capsys) -> tuple[int, str]:
    status = two_hop.main(argv)
    return status, capsys.readouterr().err


def test_a_foreign_out_folder_is_refused_before_any_work(known, tmp_path, capsys):
    _, data, _ = known
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in (("report.md", "# my notes\n"), ("summary.json", '{"mine": 1}\n'), ("items.csv", "a,b\n1,2\n")):
        (out / name).write_text(text)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    # the model path does not exist: the folder is refused before the model would load
    status, err = _run_main(_argv(Path("/nonexistent/model"), data, out), capsys)
    assert status == 2 and "not empty" in err and "report.md" in err and "/nonexistent/model" not in err, err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    status, err = _run_main(_argv(Path("/nonexistent/model"), data, out, "--resume"), capsys)
    assert status == 2 and "not empty" in err, err  # --resume does not make it ours
    # an empty existing folder is fine: the run gets past the folder (to the missing model)
    empty = tmp_path / "empty"
    empty.mkdir()
    status, err = _run_main(_argv(Path("/nonexistent/model"), data, empty), capsys)
    assert status == 2 and "/nonexistent/model" in err and "not empty" not in err, err


def test_a_second_run_is_refused_while_one_works_and_a_stale_lock_is_taken_over(known, tmp_path, capsys):
    model, data, _ = known
    out, log = tmp_path / "shared", tmp_path / "log.txt"
    first = _start(_argv(model, data, out), log)
    try:
        deadline = time.time() + 300
        while not (out / "run.lock").is_file() and first.poll() is None and time.time() < deadline:
            time.sleep(POLL_S)
        assert first.poll() is None, log.read_text()[-4000:]
        lock = (out / "run.lock").read_bytes()
        for extra in ((), ("--resume",)):
            status, err = _run_main(_argv(model, data, out, *extra), capsys)
            assert status == 2 and f"pid {first.pid}" in err and "another run is working" in err, err
        assert (out / "run.lock").read_bytes() == lock  # the refused run left the lock alone
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed run's lock stays, naming a pid that no longer runs on this host: it is stale
    assert json.loads((out / "run.lock").read_text())["pid"] == first.pid
    status, err = _run_main(_argv(model, data, out, "--resume"), capsys)
    assert status == 0, err
    assert len(list((out / "items").glob("*.json"))) == N_ITEMS and not (out / "run.lock").exists()


def _copy_run(reference: Path, data: Path, tmp: Path) -> tuple[Path, Path]:
    """A finished run and its dataset file, copied so the test can change them."""
    out = tmp / "run"
    shutil.copytree(reference, out)
    return out, Path(shutil.copy(data, tmp / "data.json"))


def test_an_edited_record_is_refused_on_resume_and_an_added_one_is_not(known, reference, tmp_path, capsys):
    model, data, items = known
    out, copy = _copy_run(reference, data, tmp_path)
    records = json.loads(copy.read_text())
    victim = records[3]
    victim["fact2_ans"] = victim["fact2_ans"] + " Milan"  # the record's answer changes, its case_id does not
    copy.write_text(json.dumps(records))
    results = {p.name: p.read_bytes() for p in (out / "items").glob("*.json")}
    status, err = _run_main(_argv(model, copy, out, "--resume"), capsys)
    assert status == 2 and "dataset changed" in err and f"case_id {victim['case_id']} " in err, err
    assert {p.name: p.read_bytes() for p in (out / "items").glob("*.json")} == results
    # a record added (with a new case_id) is not a change to what was measured
    records = json.loads(data.read_text())
    records.append({**records[0], "case_id": max(r["case_id"] for r in records) + 100})
    copy.write_text(json.dumps(records))
    status, err = _run_main(_argv(model, copy, out, "--resume"), capsys)
    assert status == 0, err
    assert {p.name: p.read_bytes() for p in (out / "items").glob("*.json")} == results


def test_resume_with_another_setting_is_refused_naming_it(known, reference, tmp_path, capsys):
    model, data, _ = known
    out, copy = _copy_run(reference, data, tmp_path)
    status, err = _run_main(_argv(model, copy, out, "--resume", "--decode-mode", "cached"), capsys)
    assert status == 2 and "decode_mode ('last' there, 'cached' now)" in err, err


def test_an_unmeasurable_item_is_skipped_named_and_the_rest_measured(known, tmp_path, capsys):
    from jaxkn.data import save_items

    model, _, items = known
    long_question = dataclasses.replace(items[0], two_hop=" ".join(["Which"] * 2000) + "?")
    long_query = dataclasses.replace(items[1], fact1_query=(" ".join(["Where"] * 2000) + "?",)
                                     + items[1].fact1_query[1:])
    data = save_items([long_question, long_query, *items[2:4]], tmp_path / "mixed.json")
    out = tmp_path / "out"
    argv = ["--model", str(model), "--dataset", str(data), "--limit", "4", "--out", str(out), *FAST]
    status, err = _run_main(argv, capsys)
    assert status == 0, err
    summary = json.loads((out / "summary.json").read_text())
    skipped = {s["case_id"]: s["reason"] for s in summary["skipped"]["items"]}
    assert summary["skipped"]["count"] == 2 and set(skipped) == {long_question.case_id, long_query.case_id}
    assert "two-hop question" in skipped[long_question.case_id] and "context" in skipped[long_question.case_id]
    assert "hop 1 query" in skipped[long_query.case_id] and "context" in skipped[long_query.case_id]
    report = (out / "report.md").read_text()
    assert all(f"case {c} ({reason})" in report for c, reason in skipped.items())
    measured = sorted(int(p.stem) for p in (out / "items").glob("*.json"))
    assert measured == sorted(it.case_id for it in items[2:4]) and summary["filter"]["studied"] == 2
    assert summary["filter"]["screened"] == 4  # the skipped are counted among the screened, once each
    status, err = _run_main([*argv, "--resume"], capsys)
    assert status == 0, err
    again = json.loads((out / "summary.json").read_text())
    assert again["skipped"] == summary["skipped"] and again["filter"] == summary["filter"]


def test_decode_mode_all_runs_end_to_end(known, reference, tmp_path, capsys):
    model, data, _ = known
    out = tmp_path / "all"
    out.mkdir()  # an empty existing --out is the run's to use
    status, err = _run_main(_argv(model, data, out, "--decode-mode", "all"), capsys)
    assert status == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["decode_mode"] == "all" and summary["filter"]["studied"] == N_ITEMS
    for path in sorted((out / "items").glob("*.json")):
        mine = json.loads(path.read_text())["interventions"]
        last = json.loads((reference / "items" / path.name).read_text())["interventions"]
        assert mine.keys() == last.keys() and len(mine) > 1  # base and the conditions of hops with neurons
        # the unscaled row does not depend on the mode
        assert mine["base"]["answer_text"] == last["base"]["answer_text"]
        assert np.isclose(mine["base"]["p_first"], last["base"]["p_first"], rtol=1e-4, atol=1e-7)
        assert all(0 <= c["p_first"] <= 1 and isinstance(c["answer_text"], str) for c in mine.values())


def test_a_run_stopped_by_an_error_releases_its_folder(known, tmp_path, capsys):
    from jaxkn.data import save_items

    model, _, items = known
    # every item unmeasurable: the run claims the folder, screens, and stops with a user error
    data = save_items([dataclasses.replace(it, two_hop=" ".join(["Which"] * 2000) + "?") for it in items[:2]],
                      tmp_path / "long.json")
    out = tmp_path / "out"
    argv = ["--model", str(model), "--dataset", str(data), "--limit", "2", "--out", str(out), *FAST]
    status, err = _run_main(argv, capsys)
    assert status == 2 and "no item can be measured" in err, err
    assert (out / "run.json").is_file() and not (out / "run.lock").exists()
    # so the same process (a notebook, a sweep) can run into the folder again: the same answer, not "busy"
    status, err = _run_main([*argv, "--resume"], capsys)
    assert status == 2 and "no item can be measured" in err, err


def test_a_folder_holding_only_a_dead_runs_lock_is_taken_over(tmp_path):
    import socket

    from jaxkn.experiments.store import ResultStore

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid no longer runs
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
    store = ResultStore(out, "fingerprint", "model", resume=False)  # killed before it wrote run.json
    assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()
    store.close()
    assert not (out / "run.lock").exists()
