"""The tables of the docs that are copied from results files (docs/results/*.json) say what those files say:
the model card's scores, Matryoshka and quantization tables, the quantization guide's tables, the load test
in docs/benchmarks.md, and the missed targets the README lists. A results file re-measured without its table
(or a table edited without its file) fails here. The Matryoshka dims the card and docs/default-model.md state
are the shipped model's (its gemma_embed.json, the dims it was trained at)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from gemma_embed.export.card import stated_matryoshka_dims

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
RESULTS = DOCS / "results"


def results(name: str) -> Any:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def table(path: Path, header: str, occurrence: int = 0) -> dict[str, list[str]]:
    """The `occurrence`-th markdown table of `path` whose first header cell is `header`: first cell -> the
    other cells (bold markers removed)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("|") and cells(line)[0] == header]
    rows: dict[str, list[str]] = {}
    for line in lines[starts[occurrence] + 2 :]:
        if not line.startswith("|"):
            break
        rows[cells(line)[0]] = cells(line)[1:]
    return rows


def cells(line: str) -> list[str]:
    return [cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")]


def main_scores(name: str) -> dict[tuple[str, int], float]:
    """(task, dim) -> main score of an eval results file."""
    return {
        (task["task_name"], score.get("dim", task["embedding_dim"])): score["main_score"]
        for task in results(name)
        for score in task["scores"]["test"]
    }


TASKS = ("STSBenchmark", "SciFact", "Banking77Classification")
CARD = DOCS / "model-card-mini.md"
SHIPPED = REPO / "src" / "gemma_embed" / "models" / "gemma-embed-mini"


def trained_dims() -> tuple[int, ...]:
    """The shipped model's Matryoshka dims (gemma_embed.json, written from the trained config)."""
    return tuple(json.loads((SHIPPED / "gemma_embed.json").read_text(encoding="utf-8"))["matryoshka_dims"])


def test_card_and_docs_state_the_dims_the_shipped_model_was_trained_at():
    dims = trained_dims()
    stated = stated_matryoshka_dims(CARD.read_text(encoding="utf-8"))
    assert len(stated) >= 3, stated  # the usage example, the architecture row and the Matryoshka table
    assert set(stated) == {dims}, f"the card states {stated}; the shipped config {dims}"
    assert tuple(int(d) for d in table(CARD, "dim")) == dims  # the table, read on its own
    assert set(stated_matryoshka_dims((DOCS / "default-model.md").read_text(encoding="utf-8"))) == {dims}


def test_card_scores_and_matryoshka_come_from_the_eval_results():
    scores = main_scores("gemma-embed-mini.json")
    assert table(CARD, "model")["gemma-embed-mini"] == [f"{scores[task, 384]:.4f}" for task in TASKS]
    matryoshka = table(CARD, "dim")
    assert [int(d) for d in matryoshka] == sorted({dim for _, dim in scores}, reverse=True)  # all evaluated
    for dim, row in matryoshka.items():
        assert row == [f"{scores[task, int(dim)]:.4f}" for task in TASKS], dim


def test_card_unseen_sets_come_from_their_results():
    twitter = main_scores("gemma-embed-mini-unseen-twitter.json")[("TwitterURLCorpus", 384)]
    languages = [
        s["main_score"] for s in results("gemma-embed-mini-unseen-multilingual.json")[0]["scores"]["test"]
    ]
    spread = f"{statistics.mean(languages):.4f} ({min(languages):.3f} - {max(languages):.3f})"
    assert table(CARD, "", 1)["gemma-embed-mini"] == [f"{twitter:.4f}", spread]  # 0: the architecture


QUANT_ROWS = {  # card row -> results key
    "bfloat16 (shipped)": "bf16",
    "int8": "PTQ int8",
    "int4": "PTQ int4",
    "mixed (int4 embeddings and MLP, int8 attention)": "PTQ mixed",
    "int4 after QAT": "QAT int4",
}


def test_card_quantization_table_comes_from_ptq_vs_qat():
    measured = results("gemma-embed-mini-ptq-vs-qat.json")["results"]
    rows = table(CARD, "weights")
    assert set(rows) == set(QUANT_ROWS)
    for label, key in QUANT_ROWS.items():
        r = measured[key]
        _size, cosines, sts, scifact = rows[label]
        assert cosines == f"{r['mean_cos']:.4f} / {r['min_cos']:.4f}", label
        assert [sts, scifact] == [f"{r['STSBenchmark']:.4f}", f"{r['SciFact']:.4f}"], label


GUIDE_ROWS = {  # docs/quantization.md row -> results key
    "bf16": "bf16",
    "bf16 (as shipped)": "bf16",
    "float32": "float32",
    "PTQ int8": "PTQ int8",
    "PTQ int4": "PTQ int4",
    "PTQ mixed": "PTQ mixed",
    "QAT int4": "QAT int4",
    "int4 on the token embeddings only": "int4: token embeddings only",
    "int4 on attention only": "int4: attention only",
    "int4 on the MLP only": "int4: MLP only",
    "int4 on the head only": "int4: head (dense layers) only",
}


@pytest.mark.parametrize(
    ("results_file", "columns"),
    [
        ("random-300m-int4-by-part.json", ("mean_cos", "min_cos")),
        ("gemma-embed-mini-ptq-vs-qat.json", ("mean_cos", "min_cos", "STSBenchmark", "SciFact")),
    ],
)
def test_quantization_guide_tables_come_from_their_results(results_file: str, columns: tuple[str, ...]):
    measured = results(results_file)["results"]
    # the guide's two "variant" tables, in this order: the random 300m by part, then the card's PTQ vs QAT
    rows = table(DOCS / "quantization.md", "variant", 0 if results_file.startswith("random") else 1)
    assert {GUIDE_ROWS[label] for label in rows} == set(measured)
    for label, row in rows.items():
        r = measured[GUIDE_ROWS[label]]
        for column, cell in zip(columns, row, strict=False):
            if column in r and cell:  # float32 is the reference: cosine 1 by definition, not measured
                assert cell == f"{r[column]:.4f}", (label, column)


def test_load_test_table_comes_from_its_results():
    run = results("load-test-mini.json")
    # bench/load_test.py --json writes {"command", "machine", ..., "results": [...]}; the committed file was
    # written before it recorded the machine (a bare list), so the page names that machine by hand.
    rows_of_run = run["results"] if isinstance(run, dict) else run
    rows = table(DOCS / "benchmarks.md", "gemma-embed-mini")
    labels = {"unbatched": "one input per forward pass", "batched": "dynamic batching"}
    assert len(rows) == len(rows_of_run)
    for r in rows_of_run:
        expected = [str(r["throughput_rps"]), str(r["p50_ms"]), str(r["p99_ms"]), str(r["errors"])]
        assert rows[labels[r["mode"]]] == [*expected, str(r["mean_batch"])], r["mode"]
    if isinstance(run, dict):
        text = " ".join((DOCS / "benchmarks.md").read_text(encoding="utf-8").split())
        assert run["machine"]["cpu"] in text and run["command"] in text


def test_readme_lists_the_missed_targets_with_their_measured_scores():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Targets missed") :]
    scores = main_scores("gemma-embed-mini.json")
    assert f"STS-B test {scores['STSBenchmark', 384]:.3f}" in section
    assert f"SciFact nDCG@10 {scores['SciFact', 384]:.3f}" in section
    assert "int4" in section and "peak RSS" in section


def test_the_shipped_model_card_is_the_docs_copy():
    shipped = REPO / "src" / "gemma_embed" / "models" / "gemma-embed-mini" / "README.md"
    assert shipped.read_text(encoding="utf-8") == CARD.read_text(encoding="utf-8")
