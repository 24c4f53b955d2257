"""The eval / report commands and the runner: MTEB result layout, dims, cache, named tasks, errors."""

from __future__ import annotations

import argparse
import json

import pytest

from gemma_embed.errors import DataError, GemmaEmbedError, InputError
from gemma_embed.eval import cli
from gemma_embed.eval.registry import TASKS, build_task, data_root
from gemma_embed.eval.runner import format_table, parse_dims, read_results


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gemma-embed")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def patched_encoder(monkeypatch, fake_encoder):
    """`--model anything` loads the fake encoder."""
    monkeypatch.setattr(cli, "load_encoder", lambda *a, **k: fake_encoder)
    return fake_encoder


@pytest.fixture
def sts_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        ("a cat sits on the mat", "a cat is sitting on a mat", 4.8),
        ("a man plays guitar", "someone plays a guitar", 4.0),
        ("the stock market fell", "a dog runs in the park", 0.2),
        ("children play football", "kids are playing soccer", 4.2),
        ("it is raining", "the weather is sunny", 1.0),
    ]
    path.write_text(
        "".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in rows)
    )
    return path


def test_eval_writes_mteb_layout_with_dims(tmp_path, patched_encoder, sts_file, capsys):
    out = tmp_path / "results.json"
    code = run_cli(
        "eval",
        "--model",
        "m",
        "--task-type",
        "sts",
        "--data",
        str(sts_file),
        "--dims",
        "64,16",
        "--output",
        str(out),
    )
    assert code == 0
    [result] = json.loads(out.read_text())
    assert result["task_name"] == "STS:pairs.jsonl" and result["task_type"] == "STS"
    assert result["model_name"] == "org/fake-encoder" and result["embedding_dim"] == 64
    entries = result["scores"]["test"]
    assert [e["dim"] for e in entries] == [64, 16]
    for entry in entries:
        assert entry["main_score"] == entry["cosine_spearman"]
        assert {"hf_subset", "languages", "cosine_pearson", "manhattan_spearman", "dot_spearman"} <= set(
            entry
        )
    assert patched_encoder.encoded_texts == 10  # one encoding for both dims
    table = capsys.readouterr().out
    assert "STS:pairs.jsonl" in table and "cosine_spearman" in table
    assert read_results(out) == [result]


def test_second_run_is_served_from_cache_and_identical(
    tmp_path, monkeypatch, make_fake_encoder, sts_file, capsys
):
    outputs = []
    for attempt in range(2):
        encoder = make_fake_encoder()
        monkeypatch.setattr(cli, "load_encoder", lambda *a, encoder=encoder, **k: encoder)
        out = tmp_path / f"r{attempt}.json"
        run_cli("eval", "--model", "m", "--task-type", "STS", "--data", str(sts_file), "--output", str(out))
        outputs.append((encoder.encoded_texts, json.loads(out.read_text())[0]["scores"]))
    assert outputs[0][0] == 10 and outputs[1][0] == 0
    assert outputs[0][1] == outputs[1][1]
    assert "encoded 0 texts, 10 read from the embedding cache" in capsys.readouterr().err


def test_no_cache_encodes_again(tmp_path, monkeypatch, make_fake_encoder, sts_file):
    counts = []
    for _ in range(2):
        encoder = make_fake_encoder()
        monkeypatch.setattr(cli, "load_encoder", lambda *a, encoder=encoder, **k: encoder)
        run_cli("eval", "--model", "m", "--task-type", "STS", "--data", str(sts_file), "--no-cache")
        counts.append(encoder.encoded_texts)
    assert counts == [10, 10]


def test_eval_argument_errors(patched_encoder, sts_file):
    with pytest.raises(InputError, match="either --task"):
        run_cli(
            "eval", "--model", "m", "--task", "STSBenchmark", "--task-type", "STS", "--data", str(sts_file)
        )
    with pytest.raises(InputError, match="either --task"):
        run_cli("eval", "--model", "m")
    with pytest.raises(InputError, match="go together"):
        run_cli("eval", "--model", "m", "--task-type", "STS")
    with pytest.raises(InputError, match="unknown task type"):
        run_cli("eval", "--model", "m", "--task-type", "Nope", "--data", str(sts_file))
    with pytest.raises(InputError, match="distinct positive integers"):
        run_cli("eval", "--model", "m", "--task-type", "STS", "--data", str(sts_file), "--dims", "64,64")
    with pytest.raises(InputError, match="dim 128 is not available"):
        run_cli("eval", "--model", "m", "--task-type", "STS", "--data", str(sts_file), "--dims", "128")


def test_bad_data_stops_with_data_error(tmp_path, patched_encoder):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence1,sentence2\na,b\n")
    with pytest.raises(DataError, match=r"bad\.csv: line 2: missing column\(s\) 'score'"):
        run_cli("eval", "--model", "m", "--task-type", "STS", "--data", str(bad))
    assert isinstance(DataError("x"), GemmaEmbedError)


def test_named_task_with_missing_data_says_where_it_looked(tmp_path, monkeypatch, patched_encoder):
    monkeypatch.setenv("GEMMA_EMBED_DATA", str(tmp_path / "nowhere"))
    assert data_root() == tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"task SciFact: data not found at .*nowhere[/\\]scifact"):
        run_cli("eval", "--model", "m", "--task", "SciFact")


def test_named_task_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA_EMBED_DATA", str(tmp_path))
    (tmp_path / "stsbenchmark").mkdir()
    with pytest.raises(InputError, match="unknown task 'Nope'"):
        build_task("Nope")
    with pytest.raises(InputError, match="has no split 'foo'"):
        build_task("STSBenchmark", split="foo")
    task = build_task("stsbenchmark", split="validation")  # names are case-insensitive; dev = validation
    with pytest.raises(DataError, match=r"sts-dev\.csv: file not found"):
        task.subsets["default"]()


def test_list_tasks(capsys):
    assert run_cli("eval", "--list-tasks") == 0
    out = capsys.readouterr().out
    assert all(name in out for name in TASKS)


def test_parse_dims_and_table():
    assert parse_dims("768, 512,256") == [768, 512, 256] and parse_dims(None) is None
    with pytest.raises(InputError):
        parse_dims("a,b")
    table = format_table(
        [
            {
                "task_name": "T",
                "task_type": "STS",
                "embedding_dim": 8,
                "scores": {"test": [{"hf_subset": "default", "main_score": 0.5}]},
            }
        ]
    )
    assert "T" in table and "0.5000" in table and "8" in table


def test_report_writes_markdown_and_plots(tmp_path, capsys):
    results = []
    for quantization, offset in ((None, 0.0), ("int8", -0.01)):
        for task, base in (("STSBenchmark", 0.8), ("Tatoeba", 0.5)):
            entries = [
                {"hf_subset": subset, "dim": dim, "main_score": base + offset - (768 - dim) / 10000}
                for subset in (["default"] if task == "STSBenchmark" else ["deu-eng", "fra-eng"])
                for dim in (768, 512, 256, 128)
            ]
            result = {
                "task_name": task,
                "task_type": "STS",
                "model_name": "/models/gemma",
                "embedding_dim": 768,
                "scores": {"test": entries},
            }
            if quantization:
                result["quantization"] = quantization
            results.append(result)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert run_cli("report", str(path), "--out", str(tmp_path / "report")) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| models/gemma | int8 | 128 |" in report and "## Per subset" in report
    assert "scores_vs_dim.png" in report and "scores_vs_quantization.png" in report
    for name in ("scores_vs_dim.png", "scores_vs_quantization.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rejects_non_results(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(DataError, match="not an MTEB result"):
        run_cli("report", str(path), "--out", str(tmp_path / "r"))


def test_main_cli_wiring(tmp_path, patched_encoder, capsys):
    """Through gemma_embed.cli.main: results on success, one `error:` line and exit 2 on bad data."""
    from gemma_embed import cli as main_cli

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence1": "a", "sentence2": "b"}\n')
    assert main_cli.main(["eval", "-m", "m", "--task-type", "STS", "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "bad.jsonl: line 1: missing column(s) 'score'" in err[-1]


def test_report_reads_a_plain_mteb_result_file(tmp_path):
    """An MTEB result file (one task object, no model name, no dims) still renders."""
    path = tmp_path / "STS12.json"
    path.write_text(
        json.dumps({"task_name": "STS12", "scores": {"test": [{"hf_subset": "default", "main_score": 0.7}]}})
    )
    run_cli("report", str(path), "--out", str(tmp_path / "r"))
    assert "| STS12 | none | full | 0.7000 |" in (tmp_path / "r" / "report.md").read_text()
    assert (tmp_path / "r" / "scores_vs_dim.png").is_file()


def test_eval_a_gemma_embed_checkpoint_end_to_end(tmp_path, tiny_checkpoint, sts_file):
    """The real gemma-embed backend (a random tiny checkpoint): prompts, two dims, MTEB layout."""
    out = tmp_path / "r.json"
    args = ("eval", "-m", str(tiny_checkpoint), "--task-type", "STS", "--data", str(sts_file))
    run_cli(*args, "--dims", "64,32", "--output", str(out))
    [result] = json.loads(out.read_text())
    assert [e["dim"] for e in result["scores"]["test"]] == [64, 32]
    assert all(-1 <= e["main_score"] <= 1 for e in result["scores"]["test"])
