"""The benchmarks, run small on CPU: the 7B-scale one and the time-to-converged one run end to end, print their
tables, and the PyTorch baselines and jaxkn's fast path agree on the same random model at the same rule (float32,
METHOD.md §9: 1e-4). Not timing tests."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_7b  # noqa: E402
import flops  # noqa: E402
import shapes  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    argv = ["--shape", "tiny", "--prompt-len", "8", "--steps", "20", "--batch-sizes", "1,2", "--dtype", "float32",
            "--impls", "xla", "--baseline", "torch", "--warmup", "0", "--repeats", "1", "--baseline-warmup", "0",
            "--baseline-repeats", "1", "--json", str(out)]
    return bench_7b.main(argv), out


def test_smoke_run_prints_table_and_agrees(tiny_run, capsys):
    result, out = tiny_run
    impls = [(r["impl"], r["batch"]) for r in result["rows"]]
    assert impls == [("torch-cpu", 1), ("jaxkn-xla", 1), ("jaxkn-xla", 2)]
    assert all(r["s_per_fact"] > 0 and r["peak_bytes"] > 0 for r in result["rows"])
    cfg = shapes.jaxkn_config("tiny")
    assert result["rows"][1]["counted_flop_per_fact"] == flops.fast_floor(cfg, 8, 20).total
    assert result["agreement"]["jaxkn-xla"] <= 1e-4
    assert set(result["projection"]) >= {"baseline"} and all(p["hours"] > 0 for p in result["projection"].values())
    assert json.loads(out.read_text())["meta"]["shape"] == "tiny"


def test_table_renders_every_row(tiny_run):
    result, _ = tiny_run
    table = bench_7b.markdown_table(result["rows"], result["rows"][0]["s_per_fact"], 1.0)
    lines = table.splitlines()
    assert lines[0].startswith("| impl |") and len(lines) == 2 + len(result["rows"])
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "agreement on fact 0, jaxkn-xla vs baseline" in "\n".join(bench_7b.summary_lines(result))


def test_tolerance_mode_converges_and_records_points():
    argv = ["--shape", "tiny", "--prompt-len", "8", "--steps", "12", "--quadrature", "gauss_legendre",
            "--tolerance", "0.01", "--batch-sizes", "2", "--dtype", "float32", "--impls", "xla", "--baseline", "none",
            "--warmup", "0", "--repeats", "1"]
    result = bench_7b.main(argv)
    (row,) = result["rows"]
    assert row["impl"] == "jaxkn-xla" and row["s_per_fact"] > 0 and row["xla_temp_bytes"] is None
    # converged mode: every (prompt, layer) within the tolerance, or flagged and counted
    assert row["completeness_max"] <= 0.01 or row["flagged"] > 0
    assert 12 <= row["points_max"] <= 256


def test_named_shapes_have_the_published_sizes():
    expected = {"llama2-7b": 6.738e9, "llama3-8b": 8.030e9, "mistral-7b": 7.242e9, "smollm2": 134.5e6}
    for name, count in expected.items():
        assert shapes.parameter_count(shapes.jaxkn_config(name)) == pytest.approx(count, rel=1e-3)
    assert shapes.jaxkn_config("mistral-7b").sliding_window == 4096
    assert shapes.jaxkn_config("llama3-8b").rope_scaling.rope_type == "llama3"
    hf = shapes.hf_config("llama3-8b", "bfloat16")
    assert (hf.num_key_value_heads, hf.intermediate_size, hf.vocab_size) == (8, 14336, 128256)


def test_flop_ratio_matches_method_closed_form():
    # METHOD.md §8: ratio ~ T (1.5 L + 2 H) / (L + 2 H), H = head in layer-equivalents (attention ignored there).
    cfg = shapes.jaxkn_config("llama2-7b")
    head = flops.head_flops(cfg) / flops.weight_flops_per_token(cfg)
    closed = 32 * (1.5 * cfg.n_layers + 2 * head) / (cfg.n_layers + 2 * head)
    assert flops.arithmetic_ratio(cfg, 32, 20) == pytest.approx(closed, rel=0.05)
    assert flops.arithmetic_ratio(cfg, 64, 20) > flops.arithmetic_ratio(cfg, 32, 20)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown model shape"):
        shapes.jaxkn_config("gpt-5")
    with pytest.raises(SystemExit):
        bench_7b.parse_args(["--batch-sizes", "0"])


# ---- bench_converged.py: time to a converged attribution (issue 17 item 1) ----------------------------------

CONVERGED_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_converged.py"
CONVERGED_TOL = 1e-6  # below the tiny model's left m=20 error (~1e-6), so the doubling has to run


@pytest.fixture(scope="module")
def converged_run(tmp_path_factory):
    """The script run as a user runs it (its own process), on the tiny random model with small settings."""
    import subprocess

    out = tmp_path_factory.mktemp("converged") / "tiny.json"
    argv = [sys.executable, str(CONVERGED_SCRIPT), "--model", "tiny", "--facts", "2", "--queries", "2",
            "--max-uniform", "80", "--tolerance", str(CONVERGED_TOL), "--baseline-layers", "0,2",
            "--baseline-batch", "16", "--threads", "1", "--json", str(out)]
    # the script imports the same jaxkn as this test (this checkout's, whichever copy an editable install points at)
    import jaxkn

    root = str(Path(jaxkn.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=CONVERGED_SCRIPT.parents[1], env=env)
    return proc, out


def test_converged_bench_runs_and_reports(converged_run):
    proc, out = converged_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) >= {"meta", "rows", "table", "uniform_search", "converged", "uniform", "uniform_vs_converged",
                           "baselines"}
    assert [r["impl"] for r in result["rows"]] == ["jaxkn converged", "jaxkn fast, uniform", "PyTorch loop",
                                                   "captum LIG"]
    assert all(r["s_per_fact"] > 0 for r in result["rows"])
    assert result["meta"]["prompt_tokens"] == [12] * 4 and "first answer token" in result["meta"]["target"]
    # converged mode ran as the study configures it, with the tolerance asked for
    from jaxkn.experiments.settings import StudyConfig

    study = StudyConfig().attribution.to_dict()
    assert result["meta"]["converged_config"] == dict(study, tolerance=CONVERGED_TOL)
    conv = result["converged"]
    assert len(conv["seconds"]) == 2 and conv["s_per_fact_median"] > 0
    assert (max(conv["error_per_layer"]) <= CONVERGED_TOL) == (conv["flagged"] == 0)
    assert "| jaxkn converged |" in proc.stdout and "| left m |" in proc.stdout
    assert "prompt lengths (tokens): [12, 12, 12, 12]" in proc.stdout


def test_converged_bench_uniform_search_is_honest(converged_run):
    _, out = converged_run
    result = json.loads(out.read_text())
    search = result["uniform_search"]
    ms = [s["m"] for s in search["steps"]]
    assert ms == [20 * 2**k for k in range(len(ms))] and ms[-1] <= 80
    for prev, step in zip(search["steps"], search["steps"][1:]):
        assert step["checked_layers"] == prev["above"]  # each doubling redoes only the layers still failing
    last = search["steps"][-1]
    if search["reached"]:
        assert search["m_star"] == last["m"] and last["above"] == [] and last["max_error"] <= CONVERGED_TOL
        assert all(s["above"] for s in search["steps"][:-1])
        # the all-layer run at m* agrees with the search: every layer within the tolerance
        assert max(result["uniform"]["error_per_layer"]) <= CONVERGED_TOL
    else:
        assert search["m_star"] is None and last["m"] == 80 and last["above"]
        assert "not reached" in result["rows"][2]["rule"].lower()
    assert result["rows"][2]["rule"].startswith(f"left m={search['m_used']}")


def test_converged_bench_baselines_agree_at_the_same_rule(converged_run):
    _, out = converged_run
    result = json.loads(out.read_text())
    uniform_error = np.asarray(result["uniform"]["error"])  # [queries of fact 0, L]
    for name, b in result["baselines"].items():
        assert b["parity_vs_jaxkn_uniform"] < 1e-4, name  # float32, METHOD.md §9
        assert set(b["s_per_layer_by_layer"]) == {"0", "2"}
        # completeness from the baseline's own scores and torch forwards matches jaxkn's at the same rule
        np.testing.assert_allclose(np.asarray(b["error"])[0], uniform_error[0, [0, 2]], atol=1e-5)
        assert b["s_per_fact"] == pytest.approx(b["s_per_layer"] * 3 * 2)
