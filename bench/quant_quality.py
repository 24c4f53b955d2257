"""Quality of the quantized weights of a trained model: post-training quantization (PTQ) against QAT.

    .venv/bin/python bench/quant_quality.py                              # the default model: bf16, PTQ int8/int4/mixed
    .venv/bin/python bench/quant_quality.py --qat int4=runs/mini/qat-int4/final --tasks STSBenchmark,SciFact
    .venv/bin/python bench/quant_quality.py --random embeddinggemma-300m --by-part int4   # what limits int4

For each variant, the mean and min cosine of its embeddings to the float32 reference (the model itself loaded
in float32) over `--texts` STS-B test sentences with the STS prompt, and, with `--tasks`, each task's main
score on its test split. Variants: the model in bfloat16; `gemma-embed quantize` of the model per scheme
(PTQ); and per `--qat SCHEME=DIR`, `gemma-embed quantize --scheme SCHEME` of the QAT-trained float model DIR
(`gemma-embed train recipes/mini/qat-int4.toml`), compared with the *original* float model, so QAT is
judged by how well its int4 weights reproduce the model it was trained from. Results go to `--json` and a
markdown table on stdout.

`--by-part SCHEME` adds one row per part of the model (token embeddings, attention, MLP, head) with only
that part rounded to the scheme's per-block grid, the rest float32: where the cosine is lost. `--random
PRESET` measures a random-weight model of that preset (seed 0, the `bench/speed.py` weights) instead of
`--model`, with the texts tokenized by the default model's tokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCHEMES = ("int8", "int4", "mixed")


def sts_sentences(n: int) -> list[str]:
    """The first n distinct STS-B test sentences (both sides of the pairs)."""
    from gemma_embed.eval.registry import get_named_task
    from gemma_embed.paths import data_root

    sts = get_named_task("STSBenchmark")
    pairs = sts.load(data_root() / sts.folder, "default", "test")
    return list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))[:n]


def task_scores(model_dir: str, dtype: str | None, tasks: list[str]) -> dict[str, float]:
    """Main score (mean over subsets) of each task on its test split, without the embedding cache."""
    from gemma_embed.eval.embedding import EmbeddingSource
    from gemma_embed.eval.encoders import load_encoder
    from gemma_embed.eval.registry import build_task
    from gemma_embed.eval.runner import run_task

    source = EmbeddingSource(load_encoder(model_dir, dtype=dtype), None, batch_size=64, progress=False)
    scores = {}
    for name in tasks:
        result = run_task(build_task(name, split="test"), source)
        entries = result["scores"]["test"]
        scores[name] = float(np.mean([entry["main_score"] for entry in entries]))
        source.clear()
    return scores


def cosines(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cos = (vectors * reference).sum(1)  # both L2-normalized
    return {"mean_cos": float(cos.mean()), "min_cos": float(cos.min())}


PARTS = {
    "token embeddings": lambda name: name.startswith("encoder.embed_tokens."),
    "attention": lambda name: ".self_attn." in name,
    "MLP": lambda name: ".mlp." in name,
    "head (dense layers)": lambda name: name.startswith("head."),
}


def part_cosines(model: Any, ids: Any, scheme: str, reference: np.ndarray) -> dict[str, dict[str, float]]:
    """Cosine to `reference` with one part at a time rounded to `scheme`'s per-block grid (float32 compute)."""
    import torch

    from gemma_embed.quant.weights import quantization_targets, quantize_tensor

    targets = {f"{name}.weight": (module, bits) for name, module, bits in quantization_targets(model, scheme)}
    out = {}
    for part, selects in PARTS.items():
        saved = {}
        with torch.no_grad():
            for name, (module, bits) in targets.items():
                if selects(name):
                    saved[name] = module.weight.detach().clone()
                    module.weight.copy_(quantize_tensor(module.weight, bits).dequantize())
            out[f"{scheme}: {part} only"] = cosines(embed_ids(model, ids), reference)
            for name, weight in saved.items():
                targets[name][0].weight.copy_(weight)
    return out


def embed_ids(model: Any, ids: Any) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(*batch).numpy() for batch in ids])


def parse_qat(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        scheme, sep, folder = item.partition("=")
        if not sep or scheme not in SCHEMES or not Path(folder).is_dir():
            raise SystemExit(
                f"error: --qat {item!r}: use SCHEME=DIR with SCHEME in {SCHEMES} and an existing DIR"
            )
        out.append((scheme, Path(folder)))
    return out


def padded_batches(tokenizer: Any, texts: list[str], size: int = 64) -> list[tuple[Any, Any]]:
    ids, _ = tokenizer.encode(texts)
    padded = [tokenizer.pad(ids[i : i + size]) for i in range(0, len(ids), size)]
    return [(p.input_ids, p.attention_mask) for p in padded]


def random_model_rows(preset_name: str, ids: Any) -> tuple[Any, np.ndarray, dict[str, dict[str, float]]]:
    """A random-weight model of the preset, its float32 embeddings of `ids`, and bf16 / PTQ rows."""
    import copy

    import torch

    from gemma_embed.model import EmbeddingModel, preset
    from gemma_embed.quant.weights import quantize_model

    model = EmbeddingModel(preset(preset_name)).initialize(seed=0).eval()
    reference = embed_ids(model, ids)
    rows = {"bf16": cosines(embed_ids(copy.deepcopy(model).to(torch.bfloat16), ids), reference)}
    for scheme in SCHEMES:
        quantized = copy.deepcopy(model)
        quantize_model(quantized.encoder, scheme)
        quantize_model(quantized.head, scheme)
        rows[f"PTQ {scheme}"] = cosines(embed_ids(quantized, ids), reference)
        del quantized
    return model, reference, rows


def checkpoint_rows(
    model_dir: str, float_model: Any, texts: list[str], qat: list[tuple[str, Path]], tasks: list[str]
) -> dict[str, dict[str, float]]:
    """bf16, PTQ and QAT variants of a trained checkpoint through `load` (and `--tasks` scores)."""
    import gemma_embed
    from gemma_embed.io.checkpoint import save_quantized
    from gemma_embed.prompts import DEFAULT_PROMPTS

    reference = float_model.encode(texts, prompt=DEFAULT_PROMPTS["STS"])
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gemma-embed-quant-") as tmp:
        variants: list[tuple[str, str, str | None]] = [("bf16", model_dir, "bfloat16")]
        for scheme in SCHEMES:
            out = save_quantized(float_model.checkpoint, scheme, Path(tmp) / scheme)
            variants.append((f"PTQ {scheme}", str(out), None))
        for scheme, folder in qat:
            trained = gemma_embed.load(folder, dtype="float32")
            out = save_quantized(trained.checkpoint, scheme, Path(tmp) / f"qat-{scheme}")
            variants.append((f"QAT {scheme}", str(out), None))
        for label, folder, dtype in variants:
            print(f"measuring {label} ...", file=sys.stderr, flush=True)
            vectors = gemma_embed.load(folder, dtype=dtype).encode(texts, prompt=DEFAULT_PROMPTS["STS"])
            rows[label] = cosines(vectors, reference)
            if tasks:
                rows[label].update(task_scores(folder, dtype, tasks))
        if tasks:
            rows["float32"] = task_scores(model_dir, "float32", tasks)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="float checkpoint or name (default: %(default)s)")
    parser.add_argument(
        "--random", metavar="PRESET", help="measure a random-weight model of this preset instead"
    )
    parser.add_argument("--texts", type=int, default=1000, help="STS-B test sentences for the cosines")
    parser.add_argument(
        "--qat", action="append", default=[], metavar="SCHEME=DIR", help="a QAT-trained model"
    )
    parser.add_argument("--tasks", default="", help="comma-separated tasks scored per variant (test split)")
    parser.add_argument("--by-part", choices=SCHEMES, help="also quantize one part of the model at a time")
    parser.add_argument("--json", type=Path, help="write the results here (JSON)")
    args = parser.parse_args(argv)
    qat = parse_qat(args.qat)
    tasks = [t for t in args.tasks.split(",") if t]
    if args.random and (qat or tasks):
        parser.error("--qat and --tasks apply to a trained --model, not to --random")
    warnings.simplefilter("ignore")

    import gemma_embed
    from gemma_embed.encode import resolve_model_path
    from gemma_embed.prompts import DEFAULT_PROMPTS, apply_prompt

    texts = sts_sentences(args.texts)
    model_dir = str(resolve_model_path(args.model))
    float_model = gemma_embed.load(model_dir, dtype="float32")
    ids = padded_batches(float_model.tokenizer, [apply_prompt(DEFAULT_PROMPTS["STS"], t) for t in texts])
    if args.random:
        module, reference, results = random_model_rows(args.random, ids)
    else:
        results = checkpoint_rows(model_dir, float_model, texts, qat, tasks)
        module = float_model.model
        reference = embed_ids(module, ids) if args.by_part else None
    if args.by_part:
        results.update(part_cosines(module, ids, args.by_part, reference))
    name = f"random {args.random}" if args.random else args.model
    header = ["variant", "mean cos", "min cos", *tasks]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for label, r in results.items():
        cells = [f"{r[k]:.4f}" if k in r else "–" for k in ("mean_cos", "min_cos", *tasks)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    print(f"{name}: cosine to float32 over {len(texts)} STS-B test sentences\n")
    print("\n".join(lines))
    if args.json:
        from gemma_embed.io.files import atomic_write

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from machine import machine_facts  # bench/machine.py

        with atomic_write(args.json) as handle:
            command = " ".join(["python bench/quant_quality.py", *(sys.argv[1:] if argv is None else argv)])
            record = {"command": command, "machine": machine_facts(), "model": name, "texts": len(texts)}
            json.dump({**record, "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
