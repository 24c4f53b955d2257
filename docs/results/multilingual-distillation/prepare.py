"""Derived recipes of the measured run (own teacher cache; no in-training eval) and a read-only seed of that
cache from runs/teacher_cache; cross-lingual STS dev files (English sentence1, translated sentence2)."""
import json
import sys
from pathlib import Path

import numpy as np

from gemma_embed.eval.cache import EmbeddingCache, text_keys
from gemma_embed.paths import data_root
from gemma_embed.train.data.sources.files import stsb_multi_mt
from gemma_embed.train.data.teacher import TeacherCache, load_teacher
from gemma_embed.train.recipe import Recipe
from gemma_embed.train.trainer import bitext_sets, load_sets, teacher_path

OUT = Path("runs/multilingual")
CACHE = OUT / "teacher_cache"
text = Path("recipes/mini/multilingual.toml").read_text()
text = text.replace('batch_size = 128\n\n[optimizer]', f'batch_size = 128\ncache_dir = "{CACHE}"\n\n[optimizer]')
text = text.replace('tasks = ["STSBenchmark", "STSBenchmarkMultilingualSTS"]', "tasks = []")
# the measured run: 100 steps (1 thread on a shared 2-core box), its own warmup
text = text.replace("steps = 300\n", "steps = 100\n").replace("warmup_steps = 30\n", "warmup_steps = 10\n")
variants = {"pd10": text, "pd0": text.replace("parallel_distillation_weight = 10.0", "parallel_distillation_weight = 0.0")}
for name, body in variants.items():
    assert body.count(str(CACHE)) == 1 and "tasks = []" in body and "steps = 100\n" in body
    (OUT / f"recipe-{name}.toml").write_text(body)
assert "parallel_distillation_weight = 0.0" in variants["pd0"]

recipe = Recipe.load(OUT / "recipe-pd10.toml")
sets = load_sets(recipe)
sources = list(dict.fromkeys(e.query for n in bitext_sets(recipe) for e in sets[n].examples))
teacher, identity = load_teacher(teacher_path(recipe))
shared = TeacherCache(teacher, identity)  # runs/teacher_cache: lookup only
found, vectors = shared.cached(sources)
if vectors is not None:
    keys = text_keys(sources)[found]
    EmbeddingCache(CACHE).store(shared.namespace, keys, vectors, dtype=np.float16)
print(f"seeded {int(found.sum())} of {len(sources)} source vectors from runs/teacher_cache")

root = data_root()
english = list(stsb_multi_mt(root, "en", "dev"))
for lang in sys.argv[1:]:
    rows = [
        {"sentence1": e1, "sentence2": t2, "score": score}
        for (e1, _, score), (_, t2, _) in zip(english, stsb_multi_mt(root, lang, "dev"), strict=True)
    ]
    path = OUT / f"xsts-en-{lang}.dev.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(path, len(rows))
