"""Does `load("default")` (dtype=None) encode at least as fast as `dtype="float32"` on this CPU?

    .venv/bin/python bench/default_dtype.py --json docs/results/default-dtype-<machine>.json

The shipped model is stored in bfloat16; `dtype=None` computes in bfloat16 only where the CPU does so fast
(`gemma_embed.dtypes`), else in float32 over the stored weights. Each setting runs in its own fresh process,
alternating (None, float32, None, ...) `--rounds` times so that a drifting machine load hits both alike: it
loads the model, warms up on a few texts, then encodes `--texts` SciFact abstracts (the `make demo` workload).
Reports texts/s per run, the medians, their ratio, and the dtype `None` chose with its reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_facts, machine_name  # bench/machine.py
from speed import text_pools  # bench/speed.py

SETTINGS = ("None", "float32")


def worker(setting: str, texts: int) -> dict:
    import gemma_embed

    documents = text_pools()["document"][:texts]
    model = gemma_embed.load("default", dtype=None if setting == "None" else setting)
    model.encode_document(documents[:16])  # warm-up: compiled kernels, allocator
    start = time.perf_counter()
    model.encode_document(documents, batch_size=32)
    seconds = time.perf_counter() - start
    return {
        "dtype": str(model.dtype).removeprefix("torch."),
        "reason": model.dtype_reason,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=256, help="SciFact abstracts encoded per run (256)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per setting, alternating (3)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.texts)))
        return 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    runs: dict[str, list[dict]] = {setting: [] for setting in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            cmd = [sys.executable, __file__, "--worker", setting, "--texts", str(args.texts)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                print(f"error: dtype={setting} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                return 1
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"dtype={setting}: {args.texts / runs[setting][-1]['seconds']:.1f} texts/s", flush=True)
    rates = {s: statistics.median(args.texts / r["seconds"] for r in runs[s]) for s in SETTINGS}
    ratio = rates["None"] / rates["float32"]
    facts = machine_facts()
    print(f"\nmachine: {machine_name(facts)}; {'; '.join(describe(facts))}")
    print(f"dtype=None chose {runs['None'][0]['dtype']}: {runs['None'][0]['reason']}")
    print(
        f"median texts/s: dtype=None {rates['None']:.1f}, float32 {rates['float32']:.1f}; ratio {ratio:.2f}"
    )
    if args.json:
        from gemma_embed.io.files import write_json

        report = {"command": " ".join(["python bench/default_dtype.py", *(argv or sys.argv[1:])])}
        report |= {"machine": facts, "threads": args.threads, "texts": args.texts, "runs": runs}
        write_json(args.json, {**report, "texts_per_s": rates, "none_over_float32": ratio})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
