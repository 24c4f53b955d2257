"""`gemma-embed pipeline` runs stages in order and skips finished ones; `ablate` trains variants and
tabulates them; `convert` re-saves a checkpoint in bf16; `soup --from-search` soups a search's best trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_mixture_cli import recipe_file  # noqa: F401 (fixture)

import gemma_embed
from gemma_embed import cli as main_cli
from gemma_embed.errors import ConfigError, DataError
from gemma_embed.paths import data_root
from gemma_embed.train.orchestration.ablation import load_ablation, main_scores, variant_recipe, write_report
from gemma_embed.train.orchestration.pipeline import (
    UNFINISHED_EXIT,
    default_times_path,
    load_pipeline,
    run_pipeline,
)

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_pipeline_runs_missing_stages_and_skips_done_ones(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default times file is relative to the working directory
    out = tmp_path / "bf16"
    file = write(
        tmp_path / "p.toml",
        f"""[vars]
src = "{tiny_checkpoint}"
[[stages]]
name = "convert"
output = "{out}/config.json"
command = ["convert", "{{src}}", "--out", "{out}"]
""",
    )
    assert main_cli.main(["pipeline", str(file), "--dry-run"]) == 0
    times = default_times_path(file)
    assert times == Path("runs", tmp_path.name, "p-times.json") and not times.exists()  # a plan only
    assert main_cli.main(["pipeline", str(file)]) == 0
    assert gemma_embed.load(str(out)).dtype == torch.bfloat16
    assert [e["status"] for e in json.loads(times.read_text())["stages"]] == ["ran"]
    assert main_cli.main(["pipeline", str(file)]) == 0
    assert "(done:" in capsys.readouterr().out
    assert [e["status"] for e in json.loads(times.read_text())["stages"]] == ["skipped"]


def test_pipeline_prints_and_records_each_stage_time_across_resumed_runs(tmp_path, capsys):
    done = write(tmp_path / "a.txt", "made earlier")
    file = write(
        tmp_path / "p.toml",
        f"""[vars]
dir = "{tmp_path}"
[[stages]]
name = "a"
output = "{done}"
command = ["touch", "{{dir}}/a.txt"]
[[stages]]
name = "b"
output = "{tmp_path}/b.txt"
command = ["touch", "{{dir}}/b.txt"]
[[stages]]
name = "c"
output = "{tmp_path}/c.txt"
command = ["touch", "{{dir}}/c.txt"]
[[stages]]
name = "d"
output = "{tmp_path}/d.txt"
command = ["touch", "{{dir}}/d.txt"]
""",
    )
    broken = {"c"}

    def run_command(argv: list[str]) -> int:  # trivial commands: "touch PATH" writes PATH; c fails at first
        if Path(argv[1]).stem in broken:
            return 3
        Path(argv[1]).write_text("x")
        return 0

    times = tmp_path / "runs" / "times.json"
    assert run_pipeline(load_pipeline(file), run_command=run_command, times=times) == 3
    out = capsys.readouterr().out
    assert "(done:" in out and "skipped" in out and "[b] done in " in out and "[c] failed" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert rows["a"].startswith("| a | skipped | - | - |") and rows["b"].startswith("| b | ran |")
    assert rows["c"].startswith("| c | failed |") and rows["d"] == "| d | not run | - | - |"
    assert rows["total"].startswith("| total |") and ">= " in rows["total"]  # a's build time is unknown
    first = {e["name"]: e for e in json.loads(times.read_text())["stages"]}
    assert [first[n]["status"] for n in "abcd"] == ["skipped", "ran", "failed", "not run"]
    assert first["b"]["build_seconds"] == first["b"]["seconds"] is not None
    assert first["c"]["build_seconds"] is None and first["c"]["seconds"] is not None

    broken.clear()  # fixed: the same command resumes at c
    assert run_pipeline(load_pipeline(file), run_command=run_command, times=times) == 0
    second = json.loads(times.read_text())
    entries = {e["name"]: e for e in second["stages"]}
    assert [entries[n]["status"] for n in "abcd"] == ["skipped", "skipped", "ran", "ran"]
    assert entries["b"]["seconds"] is None and entries["b"]["build_seconds"] == first["b"]["build_seconds"]
    assert entries["b"]["built_at"] == first["b"]["built_at"] is not None  # kept from the run that built it
    assert second["build_seconds_unknown"] == ["a"]
    assert second["build_seconds"] == pytest.approx(sum(entries[n]["build_seconds"] for n in "bcd"), abs=0.2)
    assert "| d | ran |" in capsys.readouterr().out


def test_a_stage_ended_by_its_time_budget_is_unfinished_not_failed(tmp_path, capsys):
    file = write(
        tmp_path / "p.toml",
        f"""[[stages]]
name = "long"
output = "{tmp_path}/long.txt"
command = ["touch", "{tmp_path}/long.txt"]
""",
    )
    times = tmp_path / "times.json"
    code = run_pipeline(load_pipeline(file), run_command=lambda argv: UNFINISHED_EXIT, times=times)
    assert code == UNFINISHED_EXIT
    out = capsys.readouterr().out
    assert "[long] session ended by its time budget, state saved; run the pipeline again" in out
    assert "failed" not in out
    assert json.loads(times.read_text())["stages"][0]["status"] == "unfinished"


def test_a_malformed_times_file_is_refused_in_one_line(tmp_path):
    file = write(tmp_path / "p.toml", '[[stages]]\nname = "a"\noutput = "x"\ncommand = ["info"]')
    times = write(tmp_path / "times.json", '{"stages": 1}')
    with pytest.raises(DataError, match="not a pipeline times file"):
        run_pipeline(load_pipeline(file), run_command=lambda argv: 0, times=times)


def test_pipeline_reports_a_stage_that_writes_nothing(tiny_checkpoint, tmp_path, capsys):
    file = write(
        tmp_path / "p.toml",
        f"""[[stages]]
name = "info"
output = "{tmp_path}/never"
command = ["info", "{tiny_checkpoint}"]
""",
    )
    assert run_pipeline(load_pipeline(file), run_command=main_cli.main) == 1
    assert "did not write" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no \\[\\[stages\\]\\]"),
        ('[[stages]]\nname = "a"\noutput = "x"', "exactly the keys"),
        ('[[stages]]\nname = "a"\noutput = "x"\ncommand = ["{nope}"]', "not in \\[vars\\]"),
        ("extra = 1", "unknown top-level key"),
    ],
)
def test_bad_pipeline_files_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline(write(tmp_path / "p.toml", text))


def test_the_mini_pipeline_file_is_valid():
    stages = load_pipeline(REPO / "recipes" / "mini" / "pipeline.toml")
    assert [s.name for s in stages][:3] == ["corpus", "sets", "tokenizer"]
    # The build ends under runs/: the package copy is never a stage output (it exists in every clone, so
    # such a stage would always be skipped).
    assert stages[-1].name == "ship" and stages[-1].output.parts[:2] == ("runs", "mini")
    assert not any(stage.output.parts[0] == "src" for stage in stages)
    for stage in stages:  # every command parses
        main_cli.build_parser().parse_args(stage.command)
    ablation = load_ablation(REPO / "recipes" / "mini" / "ablations.toml")
    assert ablation.base.name == "prefinetune.toml" and len(ablation.variants) >= 6


def test_variant_recipe_overrides_and_cuts_stages():
    base = {
        "model": {"init": "x", "static": "s"},
        "stages": [{"name": "a", "steps": 5}, {"name": "b", "steps": 5}],
    }
    recipe = variant_recipe(
        base, {"model.init": "", "model.preset": "mini", "loss.spread_out_weight": 0.0}, 7
    )
    assert recipe["model"] == {"static": "s", "preset": "mini"}
    assert recipe["loss"] == {"spread_out_weight": 0.0}
    assert recipe["stages"] == [{"name": "a", "steps": 5}, {"name": "b", "steps": 2}]
    assert base["model"]["init"] == "x"  # the base is not modified


def results_file(path: Path, scores: dict[str, float]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tasks = [
        {"task_name": t, "scores": {"test": [{"main_score": s, "hf_subset": "default"}]}}
        for t, s in scores.items()
    ]
    return write(path, json.dumps(tasks))


def test_report_tables_from_variant_results(tmp_path):
    runs = tmp_path / "runs"
    a = results_file(runs / "ref" / "results.json", {"STSBenchmark": 0.5, "SciFact": 0.25})
    results_file(runs / "other" / "results.json", {"STSBenchmark": 0.7})
    assert main_scores(a) == {"STSBenchmark": 0.5, "SciFact": 0.25}
    file = write(
        tmp_path / "abl.toml",
        f"""base = "x.toml"
steps = 1
output = "{runs}"
tasks = ["STSBenchmark", "SciFact"]
report = "{tmp_path}/report.md"
[[variants]]
name = "ref"
table = ["T1", "T2"]
[[rows]]
name = "other"
table = "T2"
model = "{tmp_path}/some-checkpoint"
""",
    )
    text = write_report(load_ablation(file)).read_text()
    assert text.count("| ref | 0.5000 | 0.2500 | 0.3750 |") == 2
    assert "| other | 0.7000 | - | - |" in text
    assert "## T1" in text and "## T2" in text


@pytest.mark.skipif(not (data_root() / "stsbenchmark").is_dir(), reason="needs ../shared/data/stsbenchmark")
def test_ablate_trains_and_scores_variants_then_soup_from_search(recipe_file, tiny_checkpoint, tmp_path):  # noqa: F811
    file = write(
        tmp_path / "abl.toml",
        f"""base = "{recipe_file}"
steps = 2
output = "{tmp_path}/runs"
tasks = ["STSBenchmark"]
report = "{tmp_path}/report.md"
[[variants]]
name = "base"
[[variants]]
name = "no spread-out"
set = {{ "loss.spread_out_weight" = 0.0 }}
[[rows]]
name = "evaluated only"
model = "{tiny_checkpoint}"
""",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main_cli.main(["ablate", str(file)]) == 0
        report = (tmp_path / "report.md").read_text()
        assert "| base |" in report and "| no spread-out |" in report and "| evaluated only |" in report
        assert not (tmp_path / "runs" / "evaluated-only" / "checkpoints").exists()
        first = (tmp_path / "runs" / "base" / "results.json").stat().st_mtime_ns
        assert main_cli.main(["ablate", str(file)]) == 0  # finished variants are not run again
        assert (tmp_path / "runs" / "base" / "results.json").stat().st_mtime_ns == first

        search = tmp_path / "mix"
        argv = ["mixture-search", str(recipe_file), "--out", str(search), "--trials", "2", "--top-k", "2"]
        assert main_cli.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    assert main_cli.main(["soup", "--from-search", str(search), "--out", str(tmp_path / "soup")]) == 0
    assert gemma_embed.load(str(tmp_path / "soup")).encode(["a test"]).shape == (1, 32)


def test_learning_curves_plot_losses_and_dev_scores(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [
        {"step": 0, "eval": {"STSBenchmark": 0.5}},
        {"step": 10, "total": 2.0},
        {"step": 20, "total": 1.0},
    ]
    lines.append({"step": 20, "eval": {"STSBenchmark": 0.6}})
    write(run / "metrics.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    from gemma_embed.train.orchestration.curves import read_metrics

    losses, scores = read_metrics(run)
    assert losses == [(10, 2.0), (20, 1.0)] and scores == {"STSBenchmark": [(0, 0.5), (20, 0.6)]}
    assert main_cli.main(["learning-curves", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert main_cli.main(["learning-curves", str(tmp_path), "--out", str(tmp_path / "d.png")]) == 2


def test_convert_with_a_missing_card_writes_nothing(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["convert", str(tiny_checkpoint), "--out", str(out), "--card", str(tmp_path / "nope.md")]
    assert main_cli.main(argv) == 2
    assert "no such file" in capsys.readouterr().err and not out.exists()


def test_convert_refuses_a_card_whose_matryoshka_dims_are_not_the_models(tiny_checkpoint, tmp_path, capsys):
    trained = " / ".join(map(str, gemma_embed.load(str(tiny_checkpoint)).dims))
    good = write(
        tmp_path / "good.md", f"# card\n`dim=`: Matryoshka: {trained}\n### Matryoshka\n\n| dim | x |\n"
    )
    bad = write(tmp_path / "bad.md", good.read_text().replace("Matryoshka: ", "Matryoshka: 999 / "))
    out = tmp_path / "out"
    argv = ["convert", str(tiny_checkpoint), "--out", str(out), "--card"]
    assert main_cli.main([*argv, str(bad)]) == 2
    assert f"states Matryoshka dims 999 / {trained}, but the model was trained at {trained}" in (
        capsys.readouterr().err
    )
    assert not out.exists()
    table = "".join(f"| {d} | 0.5 |\n" for d in trained.split(" / "))
    write(good, good.read_text().replace("| dim | x |\n", f"| dim | x |\n|---|---|\n{table}"))
    write(bad, good.read_text().replace(f"| {trained.split(' / ')[-1]} | 0.5 |", "| 7 | 0.5 |"))
    assert main_cli.main([*argv, str(bad)]) == 2 and "states Matryoshka dims" in capsys.readouterr().err
    assert main_cli.main([*argv, str(good)]) == 0
    assert (out / "README.md").read_text() == good.read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base = [", "not valid TOML"),
        (
            'base = "BASE"\nsteps = 1\noutput = "o"\ntasks = []\nreport = "r.md"\n[[variants]]\nset = {}',
            "'name'",
        ),
        (
            'base = "BASE"\nsteps = 1\noutput = "o"\ntasks = []\nreport = "r.md"\n[[rows]]\nname = "x"',
            "'model'",
        ),
    ],
)
def test_bad_ablation_files_are_refused(tmp_path, text, message):
    base = write(tmp_path / "base.toml", "")
    with pytest.raises(ConfigError, match=message):
        load_ablation(write(tmp_path / "a.toml", text.replace("BASE", str(base))))


def test_ablate_with_a_missing_base_recipe_fails_in_one_line(tmp_path, capsys):
    file = write(
        tmp_path / "a.toml", 'base = "missing.toml"\nsteps = 1\noutput = "o"\ntasks = []\nreport = "r.md"'
    )
    assert main_cli.main(["ablate", str(file)]) == 2
    assert "base recipe missing.toml does not exist" in capsys.readouterr().err
