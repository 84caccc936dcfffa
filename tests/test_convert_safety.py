"""Conversion never loses data: foreign output folders are refused before any weight is read, --overwrite
replaces only jaxkn checkpoints, killed runs leave the target untouched and their temporary folders are
cleaned by the next run; CLI errors are one line and exit status 2 (a traceback only with --debug)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import pytest

from jaxkn.config import ModelConfig
from jaxkn.convert import checkpoint
from jaxkn.convert.__main__ import convert
from jaxkn.convert.__main__ import main as convert_main
from jaxkn.convert.checkpoint import MARKER_FILE, TargetExistsError, is_checkpoint, save_checkpoint, temp_path
from jaxkn.convert.loading import load_default_model, load_model
from jaxkn.convert.mapping import CheckpointError
from jaxkn.model import init_params

DEAD_PID = 4_194_304 + 7  # above Linux's largest pid_max (2**22): no process can have it
TINY_CFG = ModelConfig(vocab_size=64, d_model=32, d_ff=48, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                       max_position_embeddings=64)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from conftest import make_tiny_hf

    path = tmp_path_factory.mktemp("hf") / "tiny-llama"
    make_tiny_hf("llama2").save_pretrained(path)
    return path


@pytest.fixture
def no_weight_reads(monkeypatch):
    """Makes every weight reader fail: a test passing with this proves the refusal came first."""
    def fail(*args, **kwargs):
        raise AssertionError("weights were read before the output folder was checked")

    import jaxkn.convert.gguf
    import jaxkn.convert.hf

    monkeypatch.setattr(jaxkn.convert.hf, "convert_hf", fail)
    monkeypatch.setattr(jaxkn.convert.gguf, "convert_gguf", fail)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tiny_params():
    return init_params(TINY_CFG, jax.random.PRNGKey(0))


def test_converting_an_hf_folder_into_itself_is_refused_and_its_config_untouched(hf_dir, no_weight_reads, capsys):
    before = _snapshot(hf_dir)
    assert convert_main([str(hf_dir), str(hf_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the source folder" in err and str(hf_dir) in err
    assert _snapshot(hf_dir) == before


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_a_foreign_output_folder_is_refused_before_any_weight_is_read(hf_dir, tmp_path, no_weight_reads, capsys,
                                                                      flags):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "llama"}')  # someone's HF config, no params/
    before = _snapshot(out)
    assert convert_main([str(hf_dir), str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert f"{out} already holds files jaxkn did not write (config.json)" in err
    assert _snapshot(out) == before
    with pytest.raises(TargetExistsError, match="did not write"):
        convert("smollm2", out, overwrite=True)  # the GGUF is not even located


def test_overwrite_replaces_a_jaxkn_checkpoint_and_nothing_else(hf_dir, tmp_path, capsys):
    out = tmp_path / "ck"
    assert convert_main([str(hf_dir), str(out)]) == 0
    assert json.loads((out / MARKER_FILE).read_text())["format"] == "jaxkn-checkpoint"
    assert convert_main([str(hf_dir), str(out)]) == 2
    assert "already holds a jaxkn checkpoint; pass --overwrite" in capsys.readouterr().err
    (out / MARKER_FILE).unlink()  # a checkpoint from before the marker: recognised by its exact layout
    assert convert_main([str(hf_dir), str(out), "--overwrite", "--dtype", "bfloat16"]) == 0
    assert load_model(out)[0].param_dtype == "bfloat16" and (out / MARKER_FILE).is_file()
    (out / "notes.txt").write_text("mine")  # no longer only what jaxkn writes
    assert convert_main([str(hf_dir), str(out), "--overwrite"]) == 2
    assert (out / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".ck.jaxkn-*"))


def test_a_killed_conversion_is_rerun_and_its_temporary_folder_cleaned(hf_dir, tmp_path):
    out = tmp_path / "ck"
    stale = temp_path(out, pid=DEAD_PID)  # what a run killed after params/ but before config.json leaves
    (stale / "params").mkdir(parents=True)
    (stale / "params" / "_METADATA").write_text("{}")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.1)
        running = temp_path(out, pid=live.pid)  # a conversion still running in another process: kept
        running.mkdir()
        assert not out.exists()
        assert convert_main([str(hf_dir), str(out)]) == 0
        assert is_checkpoint(out) and not stale.exists() and running.is_dir()
    finally:
        live.kill()
        live.wait()
    assert checkpoint.clean_stale_temps(out) == [running]  # its process is gone now


def test_temporary_folders_of_other_hosts_are_kept_until_a_day_old(tmp_path):
    out = tmp_path / "ck"
    fresh = temp_path(out, pid=os.getpid(), host="other-host.example")  # its pid means nothing here
    old = temp_path(out, pid=12, host="old-host")
    fresh.mkdir()
    old.mkdir()
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    mine = temp_path(out)  # this process's own: in use
    mine.mkdir()
    assert checkpoint.clean_stale_temps(out) == [old]
    assert fresh.is_dir() and mine.is_dir()


def test_an_incomplete_old_checkpoint_needs_overwrite(hf_dir, tmp_path, capsys):
    out = tmp_path / "ck"
    save_checkpoint(out, TINY_CFG, _tiny_params(), None)
    (out / "config.json").unlink()  # an older jaxkn killed between params/ and config.json
    (out / MARKER_FILE).unlink()
    assert convert_main([str(hf_dir), str(out)]) == 2
    assert "incomplete jaxkn checkpoint" in capsys.readouterr().err
    assert convert_main([str(hf_dir), str(out), "--overwrite"]) == 0 and is_checkpoint(out)


def test_save_checkpoint_refuses_a_foreign_folder_and_accepts_an_empty_one(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("a,b")
    with pytest.raises(TargetExistsError, match=r"foreign already holds files jaxkn did not write \(data.csv\)"):
        save_checkpoint(foreign, TINY_CFG, _tiny_params(), None, overwrite=True)
    assert [p.name for p in foreign.iterdir()] == ["data.csv"]
    (tmp_path / "empty").mkdir()
    assert is_checkpoint(save_checkpoint(tmp_path / "empty", TINY_CFG, _tiny_params(), None))
    (tmp_path / "file").write_text("x")
    with pytest.raises(TargetExistsError, match="is a file"):
        save_checkpoint(tmp_path / "file", TINY_CFG, _tiny_params(), None)


def test_load_default_model_cleans_what_killed_first_use_conversions_left(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXKN_CACHE", str(tmp_path))
    target = tmp_path / "smollm2-135m-instruct"
    save_checkpoint(target, TINY_CFG, _tiny_params(), None)  # stands in for the converted SmolLM2
    stale = temp_path(target, pid=DEAD_PID)
    stale.mkdir()
    legacy = tmp_path / ".smollm2-135m-instruct-k3j2x9"  # tempfile.mkdtemp's name, before staged writes
    legacy.mkdir()
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    fresh_legacy = tmp_path / ".smollm2-135m-instruct-a1b2c3"  # may belong to a running older version
    fresh_legacy.mkdir()
    cfg, _, _ = load_default_model()
    assert cfg == TINY_CFG
    assert not stale.exists() and not legacy.exists() and fresh_legacy.is_dir()


def test_cli_errors_are_one_line_with_status_2_and_a_traceback_with_debug(tmp_path):
    cmd = [sys.executable, "-m", "jaxkn.convert", str(tmp_path / "missing"), str(tmp_path / "out")]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        f"python -m jaxkn.convert: error: {tmp_path / 'missing'} does not exist (and is not a Hugging Face model id "
        f"like 'org/name')"]
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_main([str(tmp_path / "missing"), str(tmp_path / "out"), "--debug"])
    assert not (tmp_path / "out").exists()


def test_run_cli_reports_user_errors_and_lets_bugs_through(capsys, monkeypatch):
    from jaxkn.cli import run_cli
    from jaxkn.errors import UserInputError

    seen = []

    def failing(exc):
        def main_fn(argv):
            seen.append(argv)
            raise exc
        return main_fn

    assert run_cli(failing(UserInputError("bad flag\n  details")), [], prog="tool") == 2
    assert capsys.readouterr().err == "tool: error: bad flag\n  details\n"
    assert run_cli(failing(FileNotFoundError(2, "No such file or directory", "/x")), [], prog="tool") == 2
    assert capsys.readouterr().err == "tool: error: No such file or directory: /x\n"
    assert run_cli(failing(KeyboardInterrupt()), [], prog="tool") == 130
    with pytest.raises(RuntimeError, match="a bug"):  # not a user error: its traceback is kept
        run_cli(failing(RuntimeError("a bug")), [], prog="tool")
    with pytest.raises(UserInputError):
        run_cli(failing(UserInputError("x")), ["a", "--debug", "--", "--debug"], prog="tool")
    assert seen[-1] == ["a", "--", "--debug"]  # run_cli takes its flag; what follows "--" is the command's
    monkeypatch.setenv("JAXKN_DEBUG", "1")
    with pytest.raises(UserInputError):
        run_cli(failing(UserInputError("x")), [], prog="tool")
    assert run_cli(lambda argv: None, [], prog="tool") == 0
