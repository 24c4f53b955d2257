"""Where the int4 path's memory goes: resident memory after each stage of one encoding process, per setting.

    .venv/bin/python bench/int4_memory.py --work runs/int4-memory --checkpoint runs/profile-query/checkpoint

Builds (once, in --work) the `gemma-embed quantize --scheme int4` folder of the random-weight
`embeddinggemma-300m` checkpoint (--checkpoint, e.g. the one `bench/profile_query.py` builds; else built here
as `bench/speed.py` does) and the benchmark's text mix (--texts, default 64 as `bench/peer.py`), then runs one
fresh process per setting that imports torch, imports gemma_embed, loads the int4 folder, encodes one query,
a first batch of 32 texts and then all texts, and reads /proc/self/status after each stage (Linux only):
VmRSS, VmHWM (the peak so far), and the anonymous / file-backed parts, in MiB. After the last stage it also
splits the resident memory by mapping (/proc/self/smaps: heap, other anonymous maps, the mapped weights
file) and sums the model's tensors by kind (codes, scales, kernel copies). tracemalloc would see none of
this: torch allocates outside Python's allocator.

Settings: `eager` (GEMMA_EMBED_FUSED=0: no compiler stack, the low-memory configuration) and `fused` (the
default), each as `load` runs it, `eager, no int kernels` (GEMMA_EMBED_INT_KERNELS=0 as well: every product
dequantizes the blocks, so no per-channel int8 copy of the weights is built), and `glibc heap` (eager without `gemma_embed.encode.return_freed_memory`, glibc's adjusting mmap threshold;
every other setting calls it after loading, the opt-in low-memory configuration).
`onnx runtime`: the int4 folder exported with its own codes (`gemma-embed export onnx`: MatMulNBits /
GatherBlockQuantized, built once in --work) run by ONNX Runtime in a process that never imports torch
(stages: onnxruntime for torch, tokenizers for gemma_embed), glibc's mmap threshold fixed by
MALLOC_MMAP_THRESHOLD_ as for the torch settings; its vectors' mean cosine to `eager`'s is shown.
`--settings` picks some. Writes the table and, with --json, the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
STAGES = (
    "start",
    "import torch",
    "import gemma_embed",
    "load(int4)",
    "one query",
    "first batch",
    "all texts",
)
SETTINGS = {
    "eager": {"GEMMA_EMBED_FUSED": "0"},
    "eager, no int kernels": {"GEMMA_EMBED_FUSED": "0", "GEMMA_EMBED_INT_KERNELS": "0"},
    "fused": {"GEMMA_EMBED_FUSED": "1"},
    "glibc heap": {"GEMMA_EMBED_FUSED": "0"},
    # glibc's mmap threshold fixed, as return_freed_memory does for the torch settings: without it the heap
    # keeps the holes of the long documents' attention buffers (1,161 MiB peak against 367 measured).
    "onnx runtime": {"MALLOC_MMAP_THRESHOLD_": "131072"},
}
MAX_BATCH_TOKENS = 2048  # padded tokens per ONNX Runtime batch, as gemma_embed's encode default
ONNX = "onnx runtime"  # the int4 folder exported with its codes, run by ONNX Runtime without torch
FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def vectors_file(work: Path, setting: str) -> Path:
    """Where a setting's worker saves the vectors of all texts (compared with eager's by the main process)."""
    return work / f"vectors-{setting.replace(',', '').replace(' ', '-')}.npy"


def status_mib() -> dict[str, float]:
    lines = Path("/proc/self/status").read_text(encoding="utf-8").splitlines()
    return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in lines if line.startswith(FIELDS)}


def mappings_mib(weights: Path) -> dict[str, float]:
    """Resident MiB by mapping: the heap, other anonymous maps, the mapped weights, shared libraries, rest."""
    parts = {"heap": 0.0, "anonymous maps": 0.0, "mapped weights": 0.0, "libraries": 0.0, "other": 0.0}
    kind = "other"
    for line in Path("/proc/self/smaps").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            name = fields[5] if len(fields) > 5 else ""
            kind = (
                "heap"
                if name == "[heap]"
                else "anonymous maps"
                if not name
                else "mapped weights"
                if name.endswith((".safetensors", ".onnx.data")) and weights in Path(name).resolve().parents
                else "libraries"
                if ".so" in name
                else "other"
            )
        elif fields and fields[0] == "Rss:":
            parts[kind] += int(fields[1]) / 1024
    return parts


def tensors_mib(model: Any) -> dict[str, float]:
    """MiB of the model's tensors by kind: codes, block scales, other state, kernel copies (plain attributes)."""
    import torch

    sums: dict[str, float] = {}
    for module in model.modules():
        state = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, tensor in state:
            if tensor is not None:
                kind = name if name in ("codes", "scales") else "float state"
                sums[kind] = sums.get(kind, 0.0) + tensor.numel() * tensor.element_size() / 2**20
        for name, value in vars(
            module
        ).items():  # kernel layouts built at the first call (e.g. _channel_int8)
            held = [v for v in _tensors_in(value) if isinstance(v, torch.Tensor)]
            if name.startswith("_") and held and not name.startswith(("_parameters", "_buffers")):
                sums["kernel copies"] = (
                    sums.get("kernel copies", 0.0) + sum(t.numel() * t.element_size() for t in held) / 2**20
                )
    return sums


def _tensors_in(value: Any) -> list[Any]:
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors_in(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [t for f in value.__dataclass_fields__ for t in _tensors_in(getattr(value, f))]
    return [value]


def onnx_worker(work: Path) -> None:
    """The ONNX Runtime process: the same stages with onnxruntime for torch and tokenizers for gemma_embed,
    encoding with numpy only in length-sorted batches of at most 32 texts and MAX_BATCH_TOKENS padded tokens
    (`encode`'s batching), ONNX Runtime's memory arena off."""
    print(json.dumps(status_mib()), flush=True)
    import numpy as np
    import onnxruntime

    print(json.dumps(status_mib()), flush=True)
    from tokenizers import Tokenizer

    print(json.dumps(status_mib()), flush=True)
    folder = work / "int4-onnx"
    manifest = json.loads((folder / "gemma_embed_onnx.json").read_text(encoding="utf-8"))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    options.enable_cpu_mem_arena = False  # the arena keeps every batch's peak; freed blocks go back
    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    print(json.dumps(status_mib()), flush=True)
    limit = manifest["max_seq_length"] - 2

    def encode(batch: list[str]) -> np.ndarray:
        ids = [
            [manifest["bos_token_id"], *e.ids[:limit], manifest["eos_token_id"]]
            for e in tokenizer.encode_batch([t.strip() for t in batch], add_special_tokens=False)
        ]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        batches: list[list[int]] = []
        for i in order:  # longest first: a batch's width is its first text's length
            if (
                batches
                and len(batches[-1]) < 32
                and (len(batches[-1]) + 1) * len(ids[batches[-1][0]]) <= MAX_BATCH_TOKENS
            ):
                batches[-1].append(i)
            else:
                batches.append([i])
        out = np.empty((len(ids), manifest["embedding_dim"]), dtype=np.float32)
        for rows in batches:
            width = len(ids[rows[0]])
            padded = np.full((len(rows), width), manifest["pad_token_id"], dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                padded[r, : len(ids[i])], mask[r, : len(ids[i])] = ids[i], 1
            out[rows] = session.run(["embeddings"], {"input_ids": padded, "attention_mask": mask})[0]
        return out

    texts = json.loads((work / "texts.json").read_text(encoding="utf-8"))
    queries = json.loads((work / "queries.json").read_text(encoding="utf-8"))
    encode(queries[:1])
    print(json.dumps(status_mib()), flush=True)
    encode(texts[:32])
    print(json.dumps(status_mib()), flush=True)
    vectors = encode(texts)
    print(json.dumps(status_mib()), flush=True)
    split = {"mappings": mappings_mib(folder.resolve()), "tensors": {}, "compiler imported": False}
    print(json.dumps(split), flush=True)
    np.save(vectors_file(work, ONNX), vectors)


def worker(work: Path, setting: str) -> None:
    """One process: a JSON line of /proc/self/status numbers after each of STAGES, then the split."""
    if setting == ONNX:
        onnx_worker(work)
        return
    print(json.dumps(status_mib()), flush=True)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(json.dumps(status_mib()), flush=True)
    import gemma_embed
    from gemma_embed.encode import return_freed_memory

    print(json.dumps(status_mib()), flush=True)
    folder = work / "int4"
    model = gemma_embed.load(folder)
    if setting != "glibc heap":
        return_freed_memory()
    print(json.dumps(status_mib()), flush=True)
    texts = json.loads((work / "texts.json").read_text(encoding="utf-8"))
    queries = json.loads((work / "queries.json").read_text(encoding="utf-8"))
    model.encode(queries[0])
    print(json.dumps(status_mib()), flush=True)
    model.encode(texts[:32])
    print(json.dumps(status_mib()), flush=True)
    vectors = model.encode(texts)
    print(json.dumps(status_mib()), flush=True)
    split = {
        "mappings": mappings_mib(folder.resolve()),
        "tensors": tensors_mib(model.model),
        "compiler imported": "torch._inductor" in sys.modules,
    }
    print(json.dumps(split), flush=True)
    import numpy as np

    np.save(vectors_file(work, setting), vectors)


def build(work: Path, checkpoint: Path | None, texts: int) -> None:
    """The int4 folder and the text mix, unless --work has them already (a folder of an older format is
    rebuilt: its head was quantized at load)."""
    import speed

    from gemma_embed.quant.weights import FORMAT_VERSION, MANIFEST

    pools = speed.text_pools()
    manifest = work / "int4" / MANIFEST
    if not manifest.is_file() or json.loads(manifest.read_text())["version"] != FORMAT_VERSION:
        import gemma_embed
        from gemma_embed.io.checkpoint import save_quantized
        from gemma_embed.model import preset

        if checkpoint is None:
            config = preset("embeddinggemma-300m")
            checkpoint, _, _ = speed.build_checkpoint(work, config, pools, speed.FULL_TOKENIZER_VOCAB)
        floats = gemma_embed.load(checkpoint, dtype="float32")
        save_quantized(floats.checkpoint, "int4", work / "int4", overwrite=True)
    if not (work / "int4-onnx" / "gemma_embed_onnx.json").is_file():
        from gemma_embed.export.onnx import export_onnx

        export_onnx(work / "int4", work / "int4-onnx", overwrite=True)
    from gemma_embed.io.files import atomic_write

    mix = speed.text_mix(pools, texts)
    for name, values in (
        ("texts", [t for kind, _ in speed.MIX for t in mix[kind]]),
        ("queries", mix["query"]),
    ):
        with atomic_write(work / f"{name}.json") as handle:
            json.dump(values, handle)


def measure(work: Path, setting: str, threads: int) -> dict[str, Any]:
    env = {**os.environ, **SETTINGS[setting], "HF_HUB_OFFLINE": "1"}
    env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--work", str(work), "--worker", setting]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the {setting} process failed:\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {"stages": dict(zip(STAGES, rows[:-1], strict=True)), **rows[-1]}


def render(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| stage | " + " | ".join(f"{s}: RSS / peak" for s in results) + " |"]
    lines.append("|---|" + "---:|" * len(results))
    for stage in STAGES:
        cells = [
            f"{r['stages'][stage]['VmRSS']:.0f} / {r['stages'][stage]['VmHWM']:.0f}" for r in results.values()
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", "After all texts, resident MiB by mapping and the model's tensors by kind:", ""]
    for setting, r in results.items():
        maps = ", ".join(f"{k} {v:.0f}" for k, v in r["mappings"].items())
        held = ", ".join(f"{k} {v:.1f}" for k, v in r["tensors"].items())
        cosine = f"; mean cosine to eager {r['cosine to eager']:.5f}" if "cosine to eager" in r else ""
        lines.append(
            f"- {setting}: {maps}; tensors: {held}; compiler imported: {r['compiler imported']}{cosine}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work", type=Path, required=True, help="folder for the int4 folder and texts (reused)"
    )
    parser.add_argument("--checkpoint", type=Path, help="the float 300m checkpoint to quantize (else built)")
    parser.add_argument(
        "--texts", type=int, default=64, help="texts in the mix (default 64, as bench/peer.py)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--worker", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").is_file():
        parser.error("needs Linux /proc/self/status")
    if args.worker:
        worker(args.work, args.worker)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    build(args.work, args.checkpoint, args.texts)
    results = {}
    for setting in args.settings:
        print(f"measuring {setting} ...", file=sys.stderr, flush=True)
        results[setting] = measure(args.work, setting, args.threads)
    import numpy as np

    eager = vectors_file(args.work, "eager")
    reference = np.load(eager) if eager.is_file() else None
    for setting, r in results.items():
        if reference is not None and setting != "eager":
            vectors = np.load(vectors_file(args.work, setting))
            r["cosine to eager"] = float((vectors * reference).sum(1).mean())
    table = render(results)
    print(table)
    if args.json:
        from gemma_embed.io.files import write_json

        command = "python bench/int4_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
        settings = {
            "command": command,
            "texts": args.texts,
            "threads": args.threads,
            "preset": "embeddinggemma-300m",
        }
        write_json(args.json, {"settings": settings, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
