"""Recipes: every shipped recipe is valid; unknown keys, wrong types and inconsistent values stop with a
ConfigError that names the key and its section."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from gemma_embed.errors import ConfigError
from gemma_embed.train.recipe import Recipe, resolved_stage_records

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.toml"))
BASE: dict[str, Any] = {
    "model": {"preset": "tiny"},
    "tokenizer": {"vocab_size": 512},
    "data": {"sets": [{"name": "stsb_train"}, {"name": "mine", "file": "pairs.jsonl", "task": "retrieval"}]},
    "stages": [{"name": "pre-finetuning", "steps": 10, "mixture": {"stsb_train": 1, "mine": 2}}],
}


def recipe(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-path changes, e.g. recipe(**{"optimizer.lr": 0})."""
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {}) if not key.isdigit() else node[int(key)]
        if leaf.isdigit():
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return raw


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_are_valid(path):
    loaded = Recipe.load(path)
    assert loaded.total_steps > 0


def test_defaults_and_values():
    loaded = Recipe.from_dict(recipe(**{"optimizer.lr": 3}))
    assert loaded.optimizer.lr == 3.0 and isinstance(loaded.optimizer.lr, float)
    assert loaded.stages[0].preset().batch_size == 512  # from the pre-finetuning preset
    assert loaded.stages[0].mixture == {"stsb_train": 1.0, "mine": 2.0}
    assert loaded.eval.tasks == ["STSBenchmark"] and loaded.eval.split == "dev"
    assert set(loaded.training_dict()) == {
        "model", "stages", "data", "seed", "tokenizer", "loss", "teacher", "optimizer", "train"
    }  # fmt: skip
    assert Recipe.from_dict(loaded.to_dict()) == loaded


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 3}, "unknown key 'epochs' at the top level; allowed keys: model, stages, data, seed"),
        (
            {"optimizer.learning_rate": 1},
            "unknown key 'learning_rate' in [optimizer]; allowed keys: lr, weight_decay",
        ),
        (
            {"data.sets.1.path": "x"},
            "unknown key 'path' in [data.sets[1]]; allowed keys: name, file, task, max_rows",
        ),
        (
            {"stages.0.negatives": 1},
            "unknown key 'negatives' in [stages[0]]; allowed keys: name, steps, batch_size",
        ),
        (
            {"model.config": {"layers": 2}},
            "unknown key 'layers' in [model.config]; allowed keys: bos_token_id",
        ),
        ({"checkpoint.every": "10"}, "checkpoint.every must be an integer, got '10'"),
        ({"train.grad_accum": True}, "train.grad_accum must be an integer, got True"),
        ({"optimizer.betas": [0.9, "x"]}, "optimizer.betas[1] must be a number, got 'x'"),
        ({"stages": {"name": "x"}}, "stages must be a list of a table"),
        ({"stages.0.steps": 0}, "stages[0].steps must be > 0"),
        ({"stages.0.name": "warmup"}, "stages[0].name = 'warmup'; use one of 'pre-finetuning', 'finetuning'"),
        ({"stages.0.mixture": {"other": 1}}, "stages[0].mixture names 'other', which is not in data.sets"),
        ({"model.init": "ckpt"}, "[model] needs exactly one of 'preset' and 'init'"),
        (
            {"tokenizer.path": "t.json"},
            "a preset model needs exactly one of tokenizer.path and tokenizer.vocab_size",
        ),
        ({"model.config": {"vocab_size": 9}}, "model.config.vocab_size is set by the tokenizer"),
        ({"data.sets.0.task": "retrieval"}, "data.sets[0].task applies to file sets"),
        ({"data.sets.1.name": "stsb_train"}, "data.sets names must be unique"),
        ({"loss.distillation_weight": 1.0}, "needs exactly one of teacher.path and teacher.package"),
        ({"loss.relational": "l2"}, "loss.relational = 'l2'; use one of '', 'kl', 'mse'"),
        (
            {"optimizer.schedule": "step"},
            "optimizer.schedule = 'step'; use one of 'cosine', 'linear', 'constant'",
        ),
        ({"train.precision": "fp16"}, "train.precision = 'fp16'; use one of 'fp32', 'bf16'"),
        ({"train.parallel": "zero"}, "train.parallel = 'zero'; use one of 'ddp', 'fsdp'"),
        ({"eval.split": "test"}, "eval.split = 'test': the test split is for the final report"),
        ({"model.transform": "no_colon"}, "model.transform must be 'module:function'"),
    ],
)
def test_invalid_recipes_name_the_problem(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Recipe.from_dict(recipe(**changes))


def test_missing_required_keys():
    with pytest.raises(ConfigError, match=re.escape("missing key 'stages' at the top level")):
        Recipe.from_dict({"model": {"preset": "tiny"}})
    with pytest.raises(ConfigError, match=re.escape("missing key 'steps' in [stages[0]]")):
        Recipe.from_dict(recipe(**{"stages.0": {"name": "finetuning"}}))


def test_load_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\npreset = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not a valid TOML file"):
        Recipe.load(bad)
    bad.write_text('[model]\npreset = "tiny"\ncolour = 1\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown key 'colour' in \[model\]"):
        Recipe.load(bad)
    with pytest.raises(ConfigError, match="no such recipe file"):
        Recipe.load(tmp_path / "absent.toml")


def test_stage_values_are_resolved_and_recorded_in_full():
    # unset batch_size / num_negatives / size_exponent come from the stage preset, and the recipe says so
    stage = Recipe.from_dict(recipe(**{"stages.0.batch_size": 8})).to_dict()["stages"][0]
    assert (stage["batch_size"], stage["num_negatives"], stage["size_exponent"]) == (8, 0, 0.5)


def test_states_written_before_resolution_still_match():
    # trainer.json of older runs records None for preset values; filled in, they equal today's recipe
    current = Recipe.from_dict(recipe()).training_dict()["stages"]
    old = [{**current[0], "batch_size": None, "num_negatives": None, "size_exponent": None}]
    assert resolved_stage_records(old) == current
