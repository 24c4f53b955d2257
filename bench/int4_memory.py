"""Where the int4 path's memory goes: RSS and peak after each step of one encoding process.

    .venv/bin/python bench/int4_memory.py --work runs/int4-memory      # GEMMA_EMBED_FUSED=0 (low memory)
    .venv/bin/python bench/int4_memory.py --work runs/int4-memory --fused

Builds (once, in --work) the random-weight `embeddinggemma-300m` checkpoint of `bench/speed.py`, its
`gemma-embed quantize --scheme int4` folder and the benchmark's 256-text mix, then runs one fresh process
that imports, loads the int4 folder, encodes one batch and then all texts, printing VmRSS, VmHWM and the
anonymous / file-backed parts (MiB, from /proc/self/status, Linux only) after each step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
STEPS = ("import torch, gemma_embed", "load(int4)", "first batch encoded", "all texts encoded")


def status_mib() -> dict[str, int]:
    fields = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    lines = Path("/proc/self/status").read_text(encoding="utf-8").splitlines()
    return {line.split(":")[0]: int(line.split()[1]) // 1024 for line in lines if line.startswith(fields)}


def worker(work: Path) -> None:
    """One process: the steps of STEPS, a JSON line of /proc/self/status numbers after each."""
    print(json.dumps(status_mib()), flush=True)
    import gemma_embed

    print(json.dumps(status_mib()), flush=True)
    model = gemma_embed.load(work / "int4")
    print(json.dumps(status_mib()), flush=True)
    texts = json.loads((work / "texts.json").read_text(encoding="utf-8"))
    model.encode(texts[:32])
    print(json.dumps(status_mib()), flush=True)
    model.encode(texts)
    print(json.dumps(status_mib()), flush=True)


def build(work: Path) -> None:
    """The checkpoint, its int4 folder and the text mix, unless --work has them already."""
    if (work / "int4" / "config.json").is_file() and (work / "texts.json").is_file():
        return
    import speed

    import gemma_embed
    from gemma_embed.io.checkpoint import save_quantized
    from gemma_embed.io.files import atomic_write
    from gemma_embed.model import preset

    pools = speed.text_pools()
    checkpoint, _, _ = speed.build_checkpoint(
        work, preset("embeddinggemma-300m"), pools, speed.FULL_TOKENIZER_VOCAB
    )
    save_quantized(
        gemma_embed.load(checkpoint, dtype="float32").checkpoint, "int4", work / "int4", overwrite=True
    )
    mix = speed.text_mix(pools, 256)
    with atomic_write(work / "texts.json") as handle:
        json.dump([t for kind, _ in speed.MIX for t in mix[kind]], handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the built checkpoints (reused)")
    parser.add_argument("--fused", action="store_true", help="keep the fused kernels on (default: off)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").is_file():
        parser.error("needs Linux /proc/self/status")
    if args.worker:
        worker(args.work)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    build(args.work)
    env = {**os.environ, "GEMMA_EMBED_FUSED": "1" if args.fused else "0", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--work", str(args.work), "--worker"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        print(f"error: the measuring process failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return 1
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    print(f"GEMMA_EMBED_FUSED={env['GEMMA_EMBED_FUSED']}; MiB\n")
    print("| step | RSS | peak | anonymous / file-backed |\n|---|---:|---:|---|")
    for step, row in zip(("start", *STEPS), rows, strict=True):
        print(f"| {step} | {row['VmRSS']} | {row['VmHWM']} | {row['RssAnon']} / {row['RssFile']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
