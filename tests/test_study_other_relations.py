"""The same study on another TFRKN-format file (other relations, the paper's own field layout and Wikidata ids)
runs and reports the same sections. The model is the tiny random LLaMA checkpoint; its answers replace the gold
ones (a random model knows nothing else), so every stage runs."""

from __future__ import annotations

import json

import pytest

from jaxkn.experiments import two_hop

WORKS = [("Paradiso", "Dante Alighieri", "The Divine Comedy"), ("Hamlet", "William Shakespeare", "Macbeth"),
         ("Faust", "Johann Wolfgang von Goethe", "The Sorrows of Young Werther"),
         ("War and Peace", "Leo Tolstoy", "Anna Karenina"), ("Don Quixote", "Miguel de Cervantes", "Novelas ejemplares"),
         ("Ulysses", "James Joyce", "Dubliners")]


def _record(case_id: int, work: str, author: str, other: str, a1: str, a2: str) -> dict:
    # the TFRKN README's spelling "two-hop" (the loader reads it as two_hop)
    return {"case_id": case_id, "two-hop": f"What is the notable work written by the author of {work}?",
            "fact1_query": [f"Who is the author of {work}?", f"Who wrote {work}?", f"{work} was written by whom?"],
            "fact1_ans": a1,
            "fact2_query": [f"What is a notable work of {author}?", f"Name a famous work by {author}.",
                            f"Which work is {author} known for?"],
            "fact2_ans": a2,
            "two_hop_id": [[f"Q{100 + case_id}", "P50", f"Q{200 + case_id}"], [f"Q{200 + case_id}", "P800",
                                                                             f"Q{300 + case_id}"]],
            "two_hop_label": [[work, "author", author], [author, "notable work", other]]}


@pytest.mark.slow
def test_the_study_on_another_tfrkn_file_reports_the_same_sections(tiny_checkpoint, tmp_path):
    import jaxkn
    from jaxkn.data import format_prompt, normalize
    from jaxkn.generate import text_generator

    cfg, params, tokenizer = jaxkn.load_model(tiny_checkpoint)
    generate = text_generator(cfg, params, tokenizer, max_new_tokens=3, batch_size=4)
    records = []
    for case_id, (work, author, other) in enumerate(WORKS):
        said = [a.strip() for a in generate([format_prompt(f"Who is the author of {work}?"),
                                             format_prompt(f"What is a notable work of {author}?")])]
        if all(normalize(a) for a in said):
            records.append(_record(case_id, work, author, other, *said))
    assert len(records) >= 2, "the tiny model gave no usable answers"
    data = tmp_path / "TFRKN.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "out"
    assert two_hop.main(["--model", str(tiny_checkpoint), "--dataset", str(data), "--out", str(out), "--limit", "3",
                         "--queries-per-hop", "2", "--steps", "2", "--tolerance", "none", "--matched-draws", "10",
                         "--cot", "none,few_shot", "--cot-tokens", "6", "--answer-tokens", "4", "--bootstrap", "50",
                         "--batch-size", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["filter"]["studied"] >= 1
    assert set(summary["filter"]["by_pair"]) == {"P50->P800"}
    for key in ("attribution", "neurons", "controls", "verdicts"):
        assert key in summary, key
    report = (out / "report.md").read_text()
    for section in ("## Claim 1", "## Claim 2", "## Claim 3", "## Claim 4", "## Claim 5", "## Shared neurons",
                    "## Knowledge neurons per layer", "## Integrated-gradients completeness per layer"):
        assert section in report, section
