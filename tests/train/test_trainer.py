"""The trainer: gradient caching is exact, runs resume bitwise after a kill or a crash inside a checkpoint
write, checkpoints hold no pickle and load as models, mismatched or corrupt checkpoints are refused, the CLI
works, and the smoke recipe raises STS-B dev Spearman on real data."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import gemma_embed
from gemma_embed import cli as main_cli
from gemma_embed.errors import CheckpointError, ConfigError, DataError
from gemma_embed.model import EmbeddingModel
from gemma_embed.paths import DATA_ENV, data_root
from gemma_embed.train import trainer as trainer_module
from gemma_embed.train.recipe import Recipe
from gemma_embed.train.state import flatten_state, unflatten_state
from gemma_embed.train.trainer import Trainer, checkpoint_dirs, lr_schedule
from helpers import WORDS, random_text

REPO = Path(__file__).resolve().parents[2]
TINY = (
    "{ num_hidden_layers = 2, hidden_size = 32, intermediate_size = 64, num_attention_heads = 2, "
    "num_key_value_heads = 1, head_dim = 16, query_pre_attn_scalar = 16, sliding_window = 8, "
    "dense_dims = [64, 32], matryoshka_dims = [32, 16], max_seq_length = 32, max_position_embeddings = 64 }"
)
TWO_STAGES = """
[[stages]]
name = "pre-finetuning"
steps = 6
batch_size = 8

[[stages]]
name = "finetuning"
steps = 6
batch_size = 4
num_negatives = 1
lr = 5e-4
"""


def write_pairs(path: Path, rows: int = 64, seed: int = 0) -> Path:
    """Synthetic query / positive / 2 negatives rows (the positive shares the query's words)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(rows):
            query = random_text(rng, rng.randint(3, 8))
            positive = query.lower().rstrip(".") + " " + " ".join(rng.choice(WORDS) for _ in range(3))
            negatives = [random_text(rng, rng.randint(4, 10)) for _ in range(2)]
            f.write(json.dumps({"query": query, "positive": positive, "negatives": negatives}) + "\n")
    return path


def write_recipe(
    path: Path,
    pairs: Path,
    teacher: Path,
    *,
    stages: str = TWO_STAGES,
    train: str = "",
    optimizer: str = "lr = 1e-3",
    checkpoint: str = "every = 3\nkeep_last = 2",
    model: str = f'[model]\npreset = "tiny"\nconfig = {TINY}\n[tokenizer]\nvocab_size = 512',
) -> Path:
    """A tiny recipe on the synthetic pairs, distilled from the tiny test checkpoint (dim 64 -> projection)."""
    path.write_text(
        f"""seed = 3
{model}
[[data.sets]]
name = "pairs"
file = "{pairs}"
{stages}
[loss]
distillation_weight = 1.0
[teacher]
path = "{teacher}"
cache_dir = "{pairs.parent / "teacher_cache"}"
[optimizer]
warmup_steps = 2
{optimizer}
[train]
{train}
[checkpoint]
{checkpoint}
[eval]
tasks = []
[log]
every = 2
progress = false
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny models gain nothing from more, and on a shared CPU, OpenMP threads waiting for
    each other make a step ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trainer")
    pairs = write_pairs(root / "pairs.jsonl")
    return {"root": root, "pairs": pairs, "teacher": tiny_checkpoint}


@pytest.fixture(scope="module")
def reference(setup_dir) -> dict[str, Path]:
    """An uninterrupted run of the two-stage recipe: the target every resumed run must reproduce bitwise."""
    recipe = write_recipe(setup_dir["root"] / "recipe.toml", setup_dir["pairs"], setup_dir["teacher"])
    out = setup_dir["root"] / "reference"
    summary = Trainer(Recipe.load(recipe), out).fit()
    assert summary["steps"] == 12
    return {"recipe": recipe, "out": out}


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    weights = load_file(out / "final" / "model.safetensors")
    for dense in sorted((out / "final").glob("*_Dense")):
        weights[dense.name] = load_file(dense / "model.safetensors")["linear.weight"]
    return weights


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == torch.float32
        assert torch.equal(a[name], b[name]), f"{name} differs"


# ---- gradient caching --------------------------------------------------------------------------------------


def test_gradient_cache_equals_the_full_batch(setup_dir, tmp_path):
    """Loss and every parameter gradient (model and distillation projection) of GradCache sub-batches of 5 texts
    equal those of one full-batch forward, over 2 accumulated batches with hard negatives, in fp32."""
    stage = '[[stages]]\nname = "finetuning"\nsteps = 2\nbatch_size = 6\nnum_negatives = 1\n'
    results = []
    for chunk in (0, 5):
        recipe = write_recipe(
            tmp_path / f"r{chunk}.toml",
            setup_dir["pairs"],
            setup_dir["teacher"],
            stages=stage,
            train=f"chunk_size = {chunk}\ngrad_accum = 2",
        )
        trainer = Trainer(Recipe.load(recipe), tmp_path / f"out{chunk}")
        parts = trainer.accumulate()
        grads = {n: p.grad.clone() for n, p in trainer.modules.named_parameters()}
        results.append((parts, grads))
    (parts_full, grads_full), (parts_cached, grads_cached) = results
    assert parts_full.keys() == {"contrastive", "spread_out", "distillation", "total"}
    for name in parts_full:
        assert parts_cached[name] == pytest.approx(parts_full[name], rel=1e-6)
    assert "loss.projection.linear.weight" in grads_full
    for name, grad in grads_full.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads_cached[name], grad, rtol=1e-5, atol=1e-5 * float(grad.abs().max()))


# ---- resume ------------------------------------------------------------------------------------------------


def test_reference_run_outputs(reference):
    """Checkpoints are safetensors + JSON only (no pickle), the last 2 are kept, each holds a loadable model;
    the final model loads with gemma_embed.load and has no distillation projection; metrics are logged."""
    out = reference["out"]
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000009", "step-00000012"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".jsonl"}
    state = json.loads((out / "checkpoints" / "step-00000012" / "trainer.json").read_text())
    assert state["step"] == 12 and state["stage"] == 1 and state["sampler"]["step"] == 6
    tensors = load_file(out / "checkpoints" / "step-00000012" / "trainer.safetensors")
    assert "loss.projection.linear.weight" in tensors
    assert not any("projection" in k for k in load_file(out / "final" / "model.safetensors"))
    embedder = gemma_embed.load(out / "final")
    vectors = embedder.encode(["the red planet", "a gas giant"], task="query")
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert gemma_embed.load(out / "checkpoints" / "step-00000009" / "model").embedding_dim == 32
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]
    assert [r["stage"] for r in records] == ["pre-finetuning"] * 3 + ["finetuning"] * 3
    assert all(math.isfinite(r["total"]) and r["distillation"] > 0 for r in records)


def test_killed_run_resumes_bitwise(reference, tmp_path):
    """SIGKILL a training subprocess right after its first checkpoint; --resume ends with the reference weights."""
    out = tmp_path / "killed"
    code = (
        "import argparse, sys; from gemma_embed.train.cli import register; p = argparse.ArgumentParser(); "
        "register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(
        [sys.executable, "-c", code, "train", str(reference["recipe"]), "--output", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not checkpoint_dirs(out) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    saved = checkpoint_dirs(out)
    assert saved and saved[-1].name != "step-00000012"

    Trainer(Recipe.load(reference["recipe"]), out, resume=True).fit()
    assert_identical(final_weights(out), final_weights(reference["out"]))


def test_crash_inside_a_checkpoint_write_loses_nothing_but_the_steps_since(reference, tmp_path, monkeypatch):
    """A failure while the second checkpoint is written leaves the first one intact and no partial folder;
    resuming from it ends with the reference weights."""
    out = tmp_path / "crashed"
    writes = []
    real_save_file = trainer_module.save_file

    def failing_save_file(*args, **kwargs):
        writes.append(args[1])
        if len(writes) == 2:
            raise OSError("disk full")
        return real_save_file(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        Trainer(Recipe.load(reference["recipe"]), out).fit()
    monkeypatch.undo()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000003"]
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["step"] == 6  # logged after the lost checkpoint ...

    Trainer(Recipe.load(reference["recipe"]), out, resume=True).fit()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8, 10, 12]  # ... and replaced by the resumed run
    assert_identical(final_weights(out), final_weights(reference["out"]))


def test_resume_refuses_other_recipes_and_corrupt_checkpoints(reference, setup_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference["out"], out)
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        Trainer(Recipe.load(reference["recipe"]), out)

    other = write_recipe(
        tmp_path / "other.toml", setup_dir["pairs"], setup_dir["teacher"], optimizer="lr = 2e-3"
    )
    with pytest.raises(CheckpointError, match=r"different recipe \(differs in optimizer.lr\)"):
        Trainer(Recipe.load(other), out, resume=True)

    newest = checkpoint_dirs(out)[-1]
    (newest / "trainer.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=r"trainer\.safetensors is corrupt"):
        Trainer(Recipe.load(reference["recipe"]), out, resume=True)
    (newest / "trainer.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"trainer\.json is not valid JSON"):
        Trainer(Recipe.load(reference["recipe"]), out, resume=True)

    shutil.copytree(reference["out"] / "checkpoints" / newest.name, newest, dirs_exist_ok=True)
    config = json.loads((newest / "model" / "config.json").read_text())
    (newest / "model" / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    with pytest.raises(CheckpointError, match="the model differs from the recipe's in rms_norm_eps"):
        Trainer(Recipe.load(reference["recipe"]), out, resume=True)


# ---- pieces ------------------------------------------------------------------------------------------------


def test_a_row_without_a_positive_stops_with_a_data_error(setup_dir, tmp_path):
    pairs = tmp_path / "bad.jsonl"
    pairs.write_text(
        setup_dir["pairs"].read_text().splitlines()[0] + '\n{"query": "a query", "positive": ""}\n'
    )
    recipe = write_recipe(tmp_path / "r.toml", pairs, setup_dir["teacher"])
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: missing or empty 'positive'"):
        Trainer(Recipe.load(recipe), tmp_path / "out")


def test_model_transform_is_applied_before_training(setup_dir, tmp_path):
    """The QAT extension point: a callable (or recipe model.transform = "module:function") sees the model."""
    seen = []

    def transform(model: EmbeddingModel) -> EmbeddingModel:
        seen.append(type(model))
        model.head.dense[0].weight.requires_grad_(False)
        return model

    recipe = write_recipe(tmp_path / "r.toml", setup_dir["pairs"], setup_dir["teacher"])
    trainer = Trainer(Recipe.load(recipe), tmp_path / "out", model_transform=transform)
    assert seen == [EmbeddingModel]
    trainer.accumulate()
    assert trainer.model.head.dense[0].weight.grad is None

    bad = Recipe.from_dict(
        {**Recipe.load(recipe).to_dict(), "model": {"preset": "tiny", "transform": "nope:f"}}
    )
    with pytest.raises(ConfigError, match=r"model\.transform 'nope:f' cannot be imported"):
        Trainer(bad, tmp_path / "out2")


def test_training_from_an_init_checkpoint(setup_dir, tmp_path):
    """model.init: weights, tokenizer and prompts come from the checkpoint, and training changes the weights."""
    init = setup_dir["teacher"]
    recipe = write_recipe(
        tmp_path / "r.toml", setup_dir["pairs"], init, model=f'[model]\ninit = "{init}"', checkpoint=""
    )
    summary = Trainer(Recipe.load(recipe), tmp_path / "out", max_steps=2).fit()
    before, after = load_file(init / "model.safetensors"), final_weights(tmp_path / "out")
    assert summary["steps"] == 2 and before.keys() <= after.keys()
    assert not torch.equal(before["embed_tokens.weight"], after["embed_tokens.weight"])
    assert (tmp_path / "out" / "final" / "tokenizer.json").is_file()


def test_lr_schedule_warms_up_and_decays_per_stage():
    recipe = Recipe.from_dict(
        {
            "model": {"preset": "tiny"},
            "tokenizer": {"vocab_size": 512},
            "data": {"sets": [{"name": "stsb_train"}]},
            "stages": [
                {"name": "pre-finetuning", "steps": 10},
                {"name": "finetuning", "steps": 5, "lr": 5e-4},
            ],
            "optimizer": {"lr": 1e-3, "warmup_steps": 2, "min_lr_ratio": 0.1},
        }
    )
    factor = lr_schedule(recipe)
    assert [factor(s) for s in (0, 1, 2)] == pytest.approx([0.5, 1.0, 1.0])
    assert factor(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(9) > 0.1
    assert [factor(s) for s in (10, 11, 12)] == pytest.approx([0.25, 0.5, 0.5])  # stage 2 peaks at 5e-4


def test_training_state_round_trips_through_json_and_tensors():
    state = {
        "a": (1, [2.5, None], {"b": torch.arange(3)}),
        "rng": np.arange(4, dtype=np.uint32),
        "flag": True,
    }
    tensors: dict[str, torch.Tensor] = {}
    encoded = json.loads(json.dumps(flatten_state(state, "s", tensors)))
    assert list(tensors) == ["s.a.2.b"]
    decoded = unflatten_state(encoded, tensors)
    assert decoded["a"][:2] == (1, [2.5, None]) and torch.equal(decoded["a"][2]["b"], torch.arange(3))
    assert decoded["rng"].dtype == np.uint32 and decoded["rng"].tolist() == [0, 1, 2, 3]
    assert decoded["flag"] is True


def test_cli_train_max_steps_then_resume(setup_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.toml", setup_dir["pairs"], setup_dir["teacher"])
    out = tmp_path / "out"
    assert main_cli.main(["train", str(recipe), "--output", str(out), "--max-steps", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 4
    assert (out / "final" / "model.safetensors").is_file()
    assert main_cli.main(["train", str(recipe), "--output", str(out), "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 12

    broken = tmp_path / "broken.toml"
    broken.write_text(recipe.read_text().replace("[optimizer]", "[optimizer]\nlearning_rate = 1"))
    assert main_cli.main(["train", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'learning_rate' in [optimizer]; allowed keys: lr," in err


# ---- the smoke recipe on real data -------------------------------------------------------------------------


def test_smoke_recipe_raises_stsb_dev_spearman(tmp_path):
    root = data_root()
    needed = [
        root / "stsbenchmark" / "sts-dev.csv",
        root / "stsbenchmark" / "sts-train.csv",
        root / "snli_devtest_esnli",
    ]
    if missing := [str(p) for p in needed if not p.exists()]:
        pytest.skip(f"shared data not found: {', '.join(missing)} (set {DATA_ENV})")
    summary = Trainer(Recipe.load(REPO / "recipes" / "smoke.toml"), tmp_path / "smoke").fit()
    initial, final = summary["initial_eval"]["STSBenchmark"], summary["final_eval"]["STSBenchmark"]
    print(f"smoke: STS-B dev Spearman {initial:.4f} -> {final:.4f} in {summary['seconds']} s")
    assert final > initial + 0.05
    assert gemma_embed.load(summary["final"]).encode("A man is playing a guitar.", task="STS").shape == (64,)
