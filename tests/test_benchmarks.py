"""The 7B-scale benchmark, run small on CPU: it runs end to end, prints its table, and the PyTorch baseline and
jaxkn's fast path agree on the same random model (float32, METHOD.md §9: 1e-4). Not a timing test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
