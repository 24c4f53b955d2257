"""Single-query latency of each gemma-embed path, and where its time goes.

    .venv/bin/python bench/profile_query.py --work runs/profile-query             # 300m config
    .venv/bin/python bench/profile_query.py --work runs/profile-query --kernels   # + quantized-product table
    ... --json docs/results/profile-query-<machine>.json                          # + a results file

Builds (once, in --work) the random-weight `embeddinggemma-300m` checkpoint of `bench/speed.py` and its int8 /
int4 folders, then per path (float32, bfloat16, and the int8 / int4 folders with `dtype=None`) one fresh
process that loads, warms up (every query once, as the server's warm-up would), times `--queries` single
SciFact test queries of varying length (p50 / p99 / max, ms), and profiles 20 of them with torch.profiler
(the top operators by self CPU time); each query is also encoded alone (the small-batch path) for its
cosine to the float32 path's vector. `--kernels` adds the quantized-product table of
`gemma_embed/quant/linear.py` (one [1152, 768] matrix, one thread). Prints markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_facts  # bench/machine.py

PATHS = {"float32": ("checkpoint", "float32"), "bfloat16": ("checkpoint", "bfloat16")}
PATHS |= {"int8 (dtype=None)": ("int8", None), "int4 (dtype=None)": ("int4", None)}


def worker(work: Path, path: str, queries: int, threads: int) -> dict:
    import torch

    import gemma_embed

    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)
    folder, dtype = PATHS[path]
    model = gemma_embed.load(work / folder, dtype=dtype)
    texts = json.loads((work / "queries.json").read_text(encoding="utf-8"))
    start = time.perf_counter()
    for text in texts:
        model.encode(text)
    warm_s = time.perf_counter() - start
    vectors = [model.encode(text).tolist() for text in texts]  # one query per call: the small-batch path
    latencies, tokens = [], model.count_tokens(texts)
    for i in range(queries):
        start = time.perf_counter()
        model.encode(texts[i % len(texts)])
        latencies.append((time.perf_counter() - start) * 1000)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for text in texts[:20]:
            model.encode(text)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {
        "dtype": str(model.dtype).removeprefix("torch."),
        "reason": model.dtype_reason,
        "warm_s": warm_s,
        "tokens": [min(tokens), int(np.median(tokens)), max(tokens)],
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "max": max(latencies),
        "top": [(e.key, 100 * e.self_cpu_time_total / total) for e in events[:8]],
        "vectors": vectors,
    }


def kernel_table() -> str:
    import torch

    from gemma_embed.quant.linear import channel_int8, int8_linear
    from gemma_embed.quant.weights import quantize_tensor

    torch.set_num_threads(1)
    weight = torch.randn(1152, 768, generator=torch.Generator().manual_seed(0)) * 0.02

    def ms(fn) -> float:
        fn(), fn()
        times = []
        for _ in range(10):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000 * sorted(times)[len(times) // 2]

    rows_list = (1, 8, 29, 64, 128, 256, 512)
    lines = ["| product, ms | " + " | ".join(map(str, rows_list)) + " |", "|---" * (len(rows_list) + 1) + "|"]
    with torch.inference_mode():
        int8 = channel_int8(quantize_tensor(weight, 8).dequantize())
        for bits in (8, 4):
            q = quantize_tensor(weight, bits)
            deq = []
            for rows in rows_list:
                x = torch.randn(rows, 768).bfloat16()
                deq.append(ms(lambda x=x, q=q: torch.nn.functional.linear(x, q.dequantize(torch.bfloat16))))
            lines.append(f"| int{bits}: dequantize + bf16 mm | " + " | ".join(f"{v:.2f}" for v in deq) + " |")
        product = []
        for rows in rows_list:
            x = torch.randn(rows, 768).bfloat16()
            product.append(ms(lambda x=x: int8_linear(x, int8, None, None)))
        lines.append("| int8 x int8 product | " + " | ".join(f"{v:.2f}" for v in product) + " |")
    return "\n".join(lines)


def build(work: Path) -> None:
    if all((work / p / "config.json").is_file() for p in ("checkpoint", "int8", "int4")):
        return
    import speed

    from gemma_embed.model import preset

    pools = speed.text_pools()
    checkpoint, _, _ = speed.build_checkpoint(
        work, preset("embeddinggemma-300m"), pools, speed.FULL_TOKENIZER_VOCAB
    )
    import gemma_embed
    from gemma_embed.io.checkpoint import save_quantized

    float_model = gemma_embed.load(checkpoint, dtype="float32")
    for scheme in ("int8", "int4"):
        save_quantized(float_model.checkpoint, scheme, work / scheme, overwrite=True)
    (work / "queries.json").write_text(json.dumps(speed.text_mix(pools, 96)["query"]), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the built checkpoints (reused)")
    parser.add_argument("--queries", type=int, default=200, help="timed single queries per path")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--kernels", action="store_true", help="also the quantized-product table")
    parser.add_argument("--json", type=Path, help="also write the results here (e.g. docs/results/...)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.work, args.worker, args.queries, args.threads)))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    build(args.work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    print(f"threads {args.threads}; {args.queries} single queries per path; ms\n")
    print(
        "| path | compute dtype | warm-up s | p50 | p99 | max | cosine to float32, mean / min | top operators (self CPU %) |"
    )
    print("|---|---|---:|---:|---:|---:|---|---|")
    results, reference = {}, None
    for path in PATHS:
        cmd = [sys.executable, __file__, "--work", str(args.work), "--worker", path]
        cmd += ["--queries", str(args.queries), "--threads", str(args.threads)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"error: path {path} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        r = json.loads(done.stdout.strip().splitlines()[-1])
        vectors = np.asarray(r.pop("vectors"), dtype=np.float64)
        reference = vectors if reference is None else reference  # the first path is float32
        cosine = (vectors * reference).sum(1)  # both L2-normalized
        r["cos_mean"], r["cos_min"] = float(cosine.mean()), float(cosine.min())
        results[path] = r
        top = ", ".join(f"{name} {share:.0f}" for name, share in r["top"][:5])
        print(
            f"| {path} | {r['dtype']} | {r['warm_s']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['max']:.1f} | {r['cos_mean']:.5f} / {r['cos_min']:.5f} | {top} |",
            flush=True,
        )
    print(f"\nquery tokens min / median / max: {r['tokens']}; dtype=None reason: {r['reason']}")
    facts = machine_facts()
    report = {
        "command": " ".join(["python bench/profile_query.py", *(argv or sys.argv[1:])]),
        "machine": facts,
    }
    if args.kernels:
        print("\none [1152, 768] block-32 matrix, bfloat16 activations, one thread, by input rows\n")
        report["kernels"] = kernel_table()
        print(report["kernels"])
    if args.json:
        from gemma_embed.io.files import write_json

        write_json(args.json, {**report, "threads": args.threads, "queries": args.queries, "paths": results})
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
