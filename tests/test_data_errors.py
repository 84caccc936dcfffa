"""Dataset and config files that are empty, not JSON, JSON Lines or full of bad records: one clear error
naming the file and line (or every bad record), never a bare JSONDecodeError; content hashes per record."""

from __future__ import annotations

import copy
import gzip
import json

import pytest
from test_data_items import README_RECORD, mquake_case

from jaxkn.data import (
    ItemFormatError,
    dataset_hashes,
    load_items,
    load_mquake,
    load_tfrkn,
    record_hash,
    save_items,
)
from jaxkn.data.__main__ import main as data_main
from jaxkn.errors import JSONFileError


def _record(case_id: int, **changes) -> dict:
    return dict(copy.deepcopy(README_RECORD), case_id=case_id, **changes)


@pytest.mark.parametrize("text, match", [
    ("hello world\n", r"not valid JSON at line 1, column 1: Expecting value"),
    ('[\n  {"case_id": 1},\n  {"case_id": }\n]\n', r"not valid JSON at line 3, column 15: Expecting value"),
    ('{"a": 1} {"b": 2}', r"not valid JSON at line 1, column 10: Extra data"),
    ("", r"is empty \(expected a dataset"),
    ("  \n\n", r"is empty"),
])
def test_a_file_that_is_not_json_names_the_file_line_and_column(tmp_path, text, match):
    path = tmp_path / "data.json"
    path.write_text(text)
    with pytest.raises(JSONFileError, match=f"{path}.*{match}"):
        load_items(path)


def test_binary_and_gzip_files_are_read_by_content(tmp_path):
    binary = tmp_path / "data.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(JSONFileError, match="not UTF-8 text"):
        load_items(binary)
    unnamed = tmp_path / "data.json"  # gzip bytes without a .gz name
    unnamed.write_bytes(gzip.compress(json.dumps([README_RECORD]).encode()))
    assert load_items(unnamed)[0].case_id == 3
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(json.dumps([README_RECORD] * 50).encode())[:200])
    with pytest.raises(JSONFileError, match="cut.json.gz: cannot read this gzip file"):
        load_items(cut)


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz", "data.json"])
def test_json_lines_are_read(tmp_path, name):
    text = "\n".join(json.dumps(_record(i)) for i in range(3)) + "\n\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    items = load_items(path)
    assert [it.case_id for it in items] == [0, 1, 2]
    assert items == load_tfrkn([_record(i) for i in range(3)])
    mquake = tmp_path / "mquake.jsonl"
    mquake.write_text("\n".join(json.dumps(mquake_case(i)) for i in (4, 5)))
    assert [it.case_id for it in load_items(mquake)] == [4, 5]


def test_a_broken_json_lines_record_names_its_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(_record(0)) + "\n" + '{"case_id": 1,\n')
    with pytest.raises(JSONFileError, match=r"data.jsonl \(JSON Lines\): not valid JSON at line 2, column 15"):
        load_items(path)


def test_an_empty_list_says_the_dataset_has_no_records(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("[]")
    for load in (load_items, load_tfrkn, load_mquake):
        with pytest.raises(ItemFormatError, match=f"{path}: the dataset has no records"):
            load(path)
    built = tmp_path / "built.json"
    built.write_text(json.dumps({"format": "tfrkn", "metadata": {}, "items": []}))
    with pytest.raises(ItemFormatError, match="has no records"):
        load_items(built)
    three_hop_only = tmp_path / "mq.json"
    three_hop_only.write_text(json.dumps([mquake_case(1, n_hops=3)]))
    with pytest.raises(ItemFormatError, match="no usable records: an MQuAKE file with no 2-hop case"):
        load_items(three_hop_only)
    assert load_tfrkn([]) == []  # in memory, an empty list is just empty


def test_the_readme_spelling_two_hop_is_accepted(tmp_path):
    rec = _record(3)
    rec["two-hop"] = rec.pop("two_hop")
    path = tmp_path / "readme.json"
    path.write_text(json.dumps([rec]))
    (item,) = load_items(path)
    assert item.two_hop == README_RECORD["two_hop"] and item.to_record() == README_RECORD
    with pytest.raises(ItemFormatError, match=r"field 'two-hop': holds another value than 'two_hop'"):
        load_tfrkn([dict(rec, two_hop="Another question?")])


def test_every_bad_record_is_listed_at_once(tmp_path):
    records = [_record(i) for i in range(40)]
    for i in range(0, 40, 2):
        del records[i]["fact1_ans"]  # 20 records missing a field
    records[1]["fact2_query"] = "not a list"
    records[3]["two_hop_id"] = [["Q1"]]
    records[3]["fact1_query"] = []  # a second problem in the same record
    records[5] = "not an object"
    records[7]["case_id"] = 9  # repeats record 9's id
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ItemFormatError) as info:
        load_items(path)
    problems = info.value.problems
    assert len(problems) == 25 and len({p.index for p in problems}) == 24
    assert [(p.index, p.case_id, p.field) for p in problems[:6]] == [
        (0, 0, "fact1_ans"), (1, 1, "fact2_query"), (2, 2, "fact1_ans"), (3, 3, "fact1_query"),
        (3, 3, "two_hop_id"), (4, 4, "fact1_ans")]
    assert (5, None, None) in [(p.index, p.case_id, p.field) for p in problems]
    assert (9, 9, "case_id") in [(p.index, p.case_id, p.field) for p in problems]  # the later of the two
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 25 problems in 24 records:"
    assert lines[1] == "  record 0 (case_id 0): field 'fact1_ans': is missing"
    assert len(lines) == 22 and lines[-1] == "  ... and 5 more problems"


def test_every_bad_mquake_case_is_listed_at_once():
    cases = [mquake_case(i) for i in range(4)]
    del cases[1]["single_hops"][0]["answer"]
    del cases[3]["questions"]
    cases[2]["orig"]["triples"] = [["Q1", "P1", "Q2"]]
    with pytest.raises(ItemFormatError) as info:
        load_mquake(cases)
    assert [(p.index, p.case_id, p.field) for p in info.value.problems] == [
        (1, 1, "single_hops"), (2, 2, "two_hop_id"), (3, 3, "questions")]


def test_data_cli_reports_bad_input_in_one_message_with_status_2(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([_record(0), _record(1, fact2_ans="")]))
    assert data_main(["stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"python -m jaxkn.data: error: {path}: record 1 (case_id 1): field 'fact2_ans': is empty\n"
    assert data_main(["stats", str(tmp_path / "missing.json")]) == 2
    assert "no file at" in capsys.readouterr().err
    with pytest.raises(ItemFormatError):
        data_main(["stats", str(path), "--debug"])


def test_a_broken_config_json_names_the_file_and_line(tmp_path):
    import jax

    from jaxkn.config import ModelConfig
    from jaxkn.convert import load_checkpoint, save_checkpoint
    from jaxkn.convert.loading import load_model
    from jaxkn.model import init_params

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{\n  "model_type": "llama",\n  "vocab_size": 64,,\n}')
    with pytest.raises(JSONFileError, match=r"hf/config.json: not valid JSON at line 3, column 20"):
        load_model(hf)
    cfg = ModelConfig(vocab_size=64, d_model=16, d_ff=24, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8)
    ck = save_checkpoint(tmp_path / "ck", cfg, init_params(cfg, jax.random.PRNGKey(0)), None)
    (ck / "config.json").write_text((ck / "config.json").read_text()[:-20])
    with pytest.raises(JSONFileError, match=r"ck/config.json: not valid JSON at line \d+"):
        load_checkpoint(ck)
    (ck / "config.json").write_text("[1, 2]")
    with pytest.raises(JSONFileError, match="expected a jaxkn model config \\(a JSON object\\), got a JSON list"):
        load_checkpoint(ck)
    ck = save_checkpoint(tmp_path / "ck2", cfg, init_params(cfg, jax.random.PRNGKey(0)), None)
    (ck / "tokenizer").mkdir()
    (ck / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0",\n  "model": }')
    with pytest.raises(JSONFileError, match=r"tokenizer/tokenizer.json: not valid JSON at line 2, column 12"):
        load_checkpoint(ck)
    (hf / "config.json").write_text("{}")
    (hf / "tokenizer_config.json").write_text("{'single': 'quotes'}")
    with pytest.raises(JSONFileError, match=r"hf/tokenizer_config.json: not valid JSON at line 1, column 2"):
        load_model(hf)


def test_record_hash_keys_results_to_content(tmp_path):
    items = load_tfrkn([_record(0), _record(1, fact1_ans_alias=["Dante"]), _record(2)])
    hashes = dataset_hashes(items)
    assert list(hashes) == [0, 1, 2] and all(len(h) == 64 for h in hashes.values())
    assert hashes[0] == hashes[2]  # same content under another id
    assert hashes[0] != hashes[1]  # an alias changes what is judged
    shuffled = dict(reversed(list(_record(0).items())))  # key order does not matter
    assert record_hash(load_tfrkn([shuffled])[0]) == hashes[0]
    reloaded = load_items(save_items(items, tmp_path / "items.json.gz"))
    assert dataset_hashes(reloaded) == hashes
    with pytest.raises(ItemFormatError, match="repeats"):
        dataset_hashes(items + items[:1])


def test_data_build_refuses_existing_outputs_before_building(tmp_path, monkeypatch, capsys):
    import jaxkn.data.__main__ as cli

    monkeypatch.setattr(cli, "build_items", lambda **kw: pytest.fail("built before the output was checked"))
    out = tmp_path / "mine.json"
    out.write_text("my notes")
    assert data_main(["build", "--out", str(out)]) == 2
    assert f"{out} already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "my notes"
    assert data_main(["build", "--out", str(tmp_path / "x.json"), "--relations", "capital->capital"]) == 2
    assert "--relations: unknown relation pair 'capital->capital'" in capsys.readouterr().err


def test_save_items_replaces_a_file_whole_and_leaves_no_temporary_file(tmp_path):
    items = load_tfrkn([_record(0), _record(1)])
    path = tmp_path / "items.json.gz"
    path.write_text("old")
    assert load_items(save_items(items, path)) == items
    assert [p.name for p in tmp_path.iterdir()] == ["items.json.gz"]
