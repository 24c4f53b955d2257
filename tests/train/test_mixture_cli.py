"""`gemma-embed mixture-search`: trials train the recipe with proposed mixtures and keep the best for souping."""

from __future__ import annotations

import json
import random

import pytest
import torch

from gemma_embed import cli as main_cli
from gemma_embed.paths import data_root
from gemma_embed.train.orchestration.mixture_cli import searched_sets, trial_recipe
from gemma_embed.train.orchestration.mixture_search import read_mixtures
from gemma_embed.train.recipe import Recipe
from helpers import WORDS, random_text

TINY = (
    "{ num_hidden_layers = 1, hidden_size = 32, intermediate_size = 64, num_attention_heads = 2, "
    "num_key_value_heads = 1, head_dim = 16, query_pre_attn_scalar = 16, sliding_window = 8, "
    "dense_dims = [32], matryoshka_dims = [32, 16], max_seq_length = 32, max_position_embeddings = 64 }"
)


def write_set(path, seed):
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(40):
            query = random_text(rng, rng.randint(3, 6))
            positive = query.lower() + " " + rng.choice(WORDS)
            f.write(json.dumps({"query": query, "positive": positive}) + "\n")
    return path


@pytest.fixture()
def recipe_file(tmp_path):
    a, b = write_set(tmp_path / "a.jsonl", 0), write_set(tmp_path / "b.jsonl", 1)
    path = tmp_path / "search.toml"
    path.write_text(
        f"""seed = 1
[model]
preset = "tiny"
config = {TINY}
[tokenizer]
vocab_size = 400
[[data.sets]]
name = "a"
file = "{a}"
[[data.sets]]
name = "b"
file = "{b}"
[[stages]]
name = "pre-finetuning"
steps = 4
batch_size = 8
mixture = {{ a = 1.0, b = 1.0 }}
[loss]
distillation_weight = 0.0
[optimizer]
warmup_steps = 1
[checkpoint]
every = 0
[eval]
tasks = ["STSBenchmark"]
split = "dev"
batch_size = 256
[log]
progress = false
""",
        encoding="utf-8",
    )
    return path


def test_trial_recipe_replaces_only_the_last_stage_mixture(recipe_file):
    recipe = Recipe.load(recipe_file)
    assert searched_sets(recipe) == ["a", "b"]
    trial = trial_recipe(recipe, {"a": 0.8, "b": 0.2}, steps=2)
    assert trial.stages[-1].mixture == {"a": 0.8, "b": 0.2} and trial.stages[-1].steps == 2
    assert trial.optimizer == recipe.optimizer and recipe.stages[-1].mixture == {"a": 1.0, "b": 1.0}


@pytest.mark.skipif(not (data_root() / "stsbenchmark").is_dir(), reason="needs ../shared/data/stsbenchmark")
def test_search_writes_best_mixtures_and_soupable_trials(recipe_file, tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "mix"
        argv = ["mixture-search", str(recipe_file), "--out", str(out), "--trials", "3", "--top-k", "2"]
        assert main_cli.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    results = read_mixtures(out / "mixtures.json")
    assert len(results) == 2 and results[0].score >= results[1].score
    assert abs(sum(results[0].weights.values()) - 1) < 1e-9
    for result in results:
        assert (out / f"trial-{result.trial:03d}" / "final" / "model.safetensors").is_file()
    assert "best 2 mixtures" in capsys.readouterr().out
    assert main_cli.main(argv) == 2  # a used --out folder is refused


def test_recipe_without_eval_tasks_is_refused(recipe_file, tmp_path, capsys):
    text = recipe_file.read_text().replace('tasks = ["STSBenchmark"]', "tasks = []")
    recipe_file.write_text(text)
    assert main_cli.main(["mixture-search", str(recipe_file), "--out", str(tmp_path / "o")]) == 2
    assert "needs a dev metric" in capsys.readouterr().err
