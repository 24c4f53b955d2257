"""Speed, memory and fidelity of every CPU inference path, on one random-weight checkpoint, in one run.

    make bench                                  # embeddinggemma-300m; rewrites its section of docs/benchmarks.md
    .venv/bin/python bench/speed.py --texts 512 --batch-size 16 --threads 8
    .venv/bin/python bench/speed.py --smoke     # 2-layer tiny config, 24 texts, prints only (CI)

What is built (in a temporary directory, nothing is downloaded):
* a checkpoint of the exact `--preset` config (default embeddinggemma-300m: 24 layers, hidden 768, vocab
  262144) with random weights (`EmbeddingModel.initialize`), written by `save_checkpoint` so that
  sentence-transformers loads the same directory;
* its tokenizer: the real Gemma tokenizer (262144 entries) cannot be obtained offline, so a Gemma-style BPE
  (`gemma_embed.train.data.tokenizer`, byte fallback, Gemma's special ids) is trained on the benchmark's data
  with 32768 entries (512 for --smoke); the embedding table keeps the config's rows, the ones past the
  tokenizer are unused. Token counts per text therefore differ somewhat from the real tokenizer; tokens/s is
  computed from the tokens this tokenizer produces (<bos> and <eos> included, truncated to max_seq_length);
* `gemma-embed quantize` checkpoints (int8, int4, mixed) and, when onnx/onnxscript/onnxruntime import, the
  `gemma-embed export onnx` folder.

The text mix (from `../shared/data`, see gemma_embed.paths.data_root): a third SciFact documents with the
document prompt, a third STS-B test sentences with the STS prompt, the rest SciFact queries with the query
prompt; prompts are applied to the strings, so every path embeds identical inputs.

Each path runs in its own subprocess (so peak RSS, VmHWM, is per path: Python, libraries, model load and
inference): sentence-transformers float32 / bfloat16 (`SentenceTransformer(DIR, local_files_only=True)`),
gemma-embed float32 / bfloat16 / int8 / int4 / mixed (`gemma_embed.load`; fused kernels, see
`gemma_embed.model.kernels`), int4 again with GEMMA_EMBED_FUSED=0 (no compiler stack in memory: the
low-memory configuration), ONNX Runtime float32 (`gemma_embed.export.onnx.OnnxEncoder`). Throughput is the
median of --repeats timed passes over all texts (after a warm-up batch and query); single-query latency is p50/p99 over one-query `encode` calls. Fidelity: cosine of
each path's embeddings to the reference (sentence-transformers float32, else gemma-embed float32), mean and
min over the texts, and max |difference| for the float32 paths. Random weights make the quantized paths'
cosines a stress test, not a prediction for trained weights.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import util
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, key_values, machine_facts  # noqa: F401  bench/machine.py; peer.py uses key_values

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
MARK_START, MARK_END = "<!-- bench:speed:start -->", "<!-- bench:speed:end -->"
PATHS: dict[str, str] = {
    "st-fp32": "sentence-transformers, float32",
    "st-bf16": "sentence-transformers, bfloat16",
    "gemma-fp32": "gemma-embed, float32",
    "gemma-bf16": "gemma-embed, bfloat16",
    "gemma-int8": "gemma-embed, int8 weights (per block)",
    "gemma-int4": "gemma-embed, int4 weights (per block)",
    "gemma-mixed": "gemma-embed, mixed int4/int8 weights",
    "gemma-int4-eager": "gemma-embed, int4 weights, GEMMA_EMBED_FUSED=0 (low memory)",
    "onnx-fp32": "ONNX Runtime, float32",
}
SCHEMES = ("int8", "int4", "mixed")
FLOAT32_PATHS = ("st-fp32", "gemma-fp32", "onnx-fp32")
MIX = (("document", "documents"), ("STS", "STS sentences"), ("query", "queries"))
FULL_TOKENIZER_VOCAB, SMOKE_TOKENIZER_VOCAB = 32_768, 512
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


# ---- inputs --------------------------------------------------------------------------------------------


def text_pools() -> dict[str, list[str]]:
    """Texts by prompt name: SciFact documents, STS-B test sentences, SciFact test queries."""
    from gemma_embed.eval.registry import get_named_task
    from gemma_embed.paths import data_root

    scifact, sts = get_named_task("SciFact"), get_named_task("STSBenchmark")
    retrieval = scifact.load(data_root() / scifact.folder, "default", "test")
    pairs = sts.load(data_root() / sts.folder, "default", "test")
    return {
        "document": retrieval.corpus_texts,
        "STS": pairs.sentences1 + pairs.sentences2,
        "query": retrieval.query_texts,
    }


def text_mix(pools: dict[str, list[str]], n: int, seed: int = 0) -> dict[str, list[str]]:
    """n model inputs (prompt + text, stripped) by prompt name: n // 3 documents and STS sentences, the rest
    queries; a seeded sample, without repeats until a pool is exhausted (SciFact has 300 test queries)."""
    from gemma_embed.prompts import DEFAULT_PROMPTS, apply_prompt

    rng = random.Random(seed)
    counts = {"document": n // 3, "STS": n // 3, "query": n - 2 * (n // 3)}
    mix = {}
    for kind, count in counts.items():
        pool = pools[kind]
        picks = rng.sample(pool, min(count, len(pool))) + rng.choices(pool, k=max(0, count - len(pool)))
        mix[kind] = [apply_prompt(DEFAULT_PROMPTS[kind], text) for text in picks]
    return mix


def build_checkpoint(
    work: Path, config: Any, pools: dict[str, list[str]], vocab: int
) -> tuple[Path, Any, int]:
    """A random-weight checkpoint of `config` with a Gemma-style BPE of `vocab` entries trained on the pools;
    returns its directory, the tokenizer (a TextTokenizer) and the parameter count."""
    from gemma_embed.io.checkpoint import Checkpoint, save_checkpoint
    from gemma_embed.io.tokenizer import TextTokenizer
    from gemma_embed.model import EmbeddingModel
    from gemma_embed.train.data.tokenizer import save_tokenizer, train_tokenizer

    trained = train_tokenizer([t for texts in pools.values() for t in texts], vocab, show_progress=False)
    save_tokenizer(trained, work / "tokenizer")
    tokenizer = TextTokenizer(
        trained,
        bos_id=config.bos_token_id,
        eos_id=config.eos_token_id,
        pad_id=config.pad_token_id,
        max_length=config.max_seq_length,
    )
    model = EmbeddingModel(config).initialize(seed=0)
    path = save_checkpoint(Checkpoint(model, tokenizer, source=work / "tokenizer"), work / "checkpoint")
    return path, tokenizer, sum(p.numel() for p in model.parameters())


def build_quantized(work: Path, checkpoint: Path) -> dict[str, str]:
    """`gemma-embed quantize` checkpoints of `checkpoint`, by scheme."""
    import gemma_embed
    from gemma_embed.io.checkpoint import save_quantized

    float_model = gemma_embed.load(checkpoint, dtype="float32")
    return {s: str(save_quantized(float_model.checkpoint, s, work / s)) for s in SCHEMES}


def available_paths() -> list[str]:
    """The paths whose libraries are installed (sentence-transformers; onnx, onnxscript and onnxruntime)."""
    has_st = util.find_spec("sentence_transformers") is not None
    has_onnx = all(util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
    return [
        name for name in PATHS if (has_st or not name.startswith("st-")) and (has_onnx or name != "onnx-fp32")
    ]


# ---- one path, in its own process -------------------------------------------------------------------------


def path_encoder(name: str, job: dict[str, Any]) -> Callable[[list[str]], np.ndarray]:
    """Load path `name` and return its `texts -> float32 embeddings` function."""
    import torch

    batch_size = job["batch_size"]
    if name.startswith("st-"):
        from sentence_transformers import SentenceTransformer

        dtype = torch.bfloat16 if name == "st-bf16" else torch.float32
        st = SentenceTransformer(
            job["checkpoint"], device="cpu", local_files_only=True, model_kwargs={"dtype": dtype}
        )
        return lambda texts: st.encode(texts, batch_size=batch_size, show_progress_bar=False)
    if name == "onnx-fp32":
        from gemma_embed.export.onnx import OnnxEncoder

        onnx = OnnxEncoder(job["variants"]["onnx"], threads=job["threads"])
        return lambda texts: onnx.encode(texts, batch_size=batch_size)
    import gemma_embed

    kind = name.removeprefix("gemma-").removesuffix("-eager")
    if kind in SCHEMES:
        embedder = gemma_embed.load(job["variants"][kind])
    else:
        embedder = gemma_embed.load(job["checkpoint"], dtype={"fp32": "float32", "bf16": "bfloat16"}[kind])
    return lambda texts: embedder.encode(texts, batch_size=batch_size, show_progress=False)


def peak_rss_mib() -> float:
    """Peak resident memory of this process image: VmHWM from /proc (Linux), else ru_maxrss (KiB on BSD).

    Not ru_maxrss on Linux: it survives exec, and Python starts workers with vfork + exec, so it would report
    at least the parent's peak (which has held the model while building the variants).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(name: str, job_file: Path) -> None:
    """Measure one path and write its numbers to `<work>/<name>.json` and embeddings to `<name>.npy`."""
    import torch

    warnings.simplefilter("ignore")
    job = json.loads(job_file.read_text(encoding="utf-8"))
    torch.set_num_threads(job["threads"])
    start = time.perf_counter()
    encode = path_encoder(name, job)
    load_s = time.perf_counter() - start
    texts, queries = job["texts"], job["queries"]
    start = time.perf_counter()
    encode(texts[: job["batch_size"]])  # warm-up (gemma-embed compiles its fused kernels here)
    encode(queries[:1])
    warmup_s = time.perf_counter() - start
    seconds = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        vectors = encode(texts)
        seconds.append(time.perf_counter() - start)
    encode(queries[:2])
    latencies = []
    for i in range(job["latency_runs"]):
        start = time.perf_counter()
        encode([queries[i % len(queries)]])
        latencies.append((time.perf_counter() - start) * 1000)
    work = Path(job["work"])
    np.save(work / f"{name}.npy", np.asarray(vectors, dtype=np.float32))
    result = {
        "load_s": load_s,
        "warmup_s": warmup_s,
        "seconds": statistics.median(seconds),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "peak_rss_mib": peak_rss_mib(),
    }
    (work / f"{name}.json").write_text(json.dumps(result), encoding="utf-8")


def measure(name: str, job_file: Path, threads: int) -> dict[str, Any]:
    """Run the worker of path `name` in a fresh interpreter; its failure stops the benchmark."""
    env = {**os.environ, **WORKER_ENV, "OMP_NUM_THREADS": str(threads)}
    if name.endswith("-eager"):
        env["GEMMA_EMBED_FUSED"] = "0"  # no compiled kernels: torch's compiler stack is never imported
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--job", str(job_file)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"path {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((job_file.parent / f"{name}.json").read_text(encoding="utf-8"))


# ---- report --------------------------------------------------------------------------------------------


def machine() -> list[str]:
    """CPU model, cores, AVX2 / AVX-512 / AMX flags, and library versions (`bench/machine.py`)."""
    return describe(machine_facts())


def fidelity(work: Path, paths: list[str]) -> tuple[str, dict[str, dict[str, float]]]:
    """Per path: cosine to the reference (mean, min) and, for float32 paths, max |difference|."""
    reference = "st-fp32" if "st-fp32" in paths else "gemma-fp32"
    ref = np.load(work / f"{reference}.npy")
    out = {}
    for name in paths:
        vectors = np.load(work / f"{name}.npy")
        cosine = (vectors * ref).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref, axis=1))
        out[name] = {"cos_mean": float(cosine.mean()), "cos_min": float(cosine.min())}
        if name in FLOAT32_PATHS:
            out[name]["max_diff"] = float(np.abs(vectors - ref).max())
    return reference, out


def render(settings: dict[str, Any], results: dict[str, dict[str, float]], reference: str) -> str:
    """The markdown section: how it was run, the machine, and one table row per path."""
    tokens = settings["tokens"]

    def ratio(name: str, base: str) -> str:
        if base not in results:
            return "–"
        return f"{results[base]['seconds'] / results[name]['seconds']:.2f}"

    lines = [
        "## Speed and memory of the inference paths (`bench/speed.py`)",
        "",
        f"Command: `{settings['command']}`",
        "",
        *(f"- {line}" for line in settings["machine"]),
        f"- Model: random weights, `{settings['preset']}` config ({settings['parameters'] / 1e6:.1f}M parameters); "
        f"tokenizer: Gemma-style BPE with {settings['tokenizer_vocab']} entries trained on the data below "
        "(the real Gemma vocabulary, 262144 entries, is not available offline; the table keeps the config's rows)",
        f"- Texts: {settings['composition']}; {tokens} tokens in all ({tokens / settings['texts']:.1f} per text, "
        f"<bos>/<eos> included, at most {settings['max_seq_length']}); batch size {settings['batch_size']}; "
        f"{settings['threads']} threads",
        f"- tokens/s and texts/s: median of {settings['repeats']} passes over all texts after a warm-up batch; "
        "× ST: throughput relative to sentence-transformers float32 / bfloat16; load and warm-up: seconds to "
        "load the model and to encode the first batch and query (gemma-embed compiles its fused kernels then, "
        "or reads them from the compile cache); query latency: one-query "
        f"`encode` calls ({settings['latency_runs']}); peak RSS: the path's own process (VmHWM); "
        f"cosine and max|diff|: against `{reference}` on the same texts",
        "",
        "| path | tokens/s | texts/s | × ST fp32 | × ST bf16 | peak RSS (MiB) | load (s) | warm-up (s) "
        "| query p50 (ms) | query p99 (ms) | cos mean | cos min | max\\|diff\\| |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        diff = f"{r['max_diff']:.1e}" if "max_diff" in r else "–"
        lines.append(
            f"| {name} ({PATHS[name]}) | {tokens / r['seconds']:.0f} | {settings['texts'] / r['seconds']:.1f} "
            f"| {ratio(name, 'st-fp32')} | {ratio(name, 'st-bf16')} | {r['peak_rss_mib']:.0f} "
            f"| {r['load_s']:.1f} | {r['warmup_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cos_mean']:.5f} | {r['cos_min']:.5f} | {diff} |"
        )
    return "\n".join(lines)


def directory_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def mb(mib: float | None) -> float | None:
    return None if mib is None else mib * 2**20 / 1e6


# (description, measured value, comparison, bound): issue #6's targets on the 300m config.
def targets(
    results: dict[str, dict[str, float]], disk: dict[str, float]
) -> list[tuple[str, float, str, float]]:
    def speedup(name: str, base: str) -> float | None:
        if name in results and base in results:
            return results[base]["seconds"] / results[name]["seconds"]
        return None

    gemma = [name for name in results if name.startswith("gemma-")]
    fastest = min(gemma, key=lambda name: results[name]["seconds"]) if gemma else None
    rows = [
        (
            f"best gemma-embed path ({fastest}) tokens/s vs st-fp32 (issue 15)",
            speedup(fastest, "st-fp32") if fastest else None,
            ">=",
            2.0,
        ),
        ("gemma-bf16 tokens/s vs st-fp32", speedup("gemma-bf16", "st-fp32"), ">=", 6.0),
        ("gemma-bf16 tokens/s vs st-bf16", speedup("gemma-bf16", "st-bf16"), ">=", 3.0),
        ("gemma-bf16 mean cosine", results.get("gemma-bf16", {}).get("cos_mean"), ">=", 0.999),
        ("gemma-fp32 tokens/s vs st-fp32", speedup("gemma-fp32", "st-fp32"), ">=", 1.2),
        ("gemma-fp32 max abs difference", results.get("gemma-fp32", {}).get("max_diff"), "<=", 1e-5),
        ("gemma-int8 mean cosine", results.get("gemma-int8", {}).get("cos_mean"), ">=", 0.995),
        ("gemma-int4 mean cosine", results.get("gemma-int4", {}).get("cos_mean"), ">=", 0.98),
        ("int4 checkpoint on disk (MB)", mb(disk.get("int4")), "<=", 200.0),
        ("gemma-int4 peak RSS (MB)", mb(results.get("gemma-int4", {}).get("peak_rss_mib")), "<=", 400.0),
        (
            "gemma-int4-eager peak RSS (MB)",
            mb(results.get("gemma-int4-eager", {}).get("peak_rss_mib")),
            "<=",
            400.0,
        ),
    ]
    return [(what, value, op, bound) for what, value, op, bound in rows if value is not None]


def render_targets(results: dict[str, dict[str, float]], disk: dict[str, float]) -> str:
    """The issue's targets as a table: measured value, bound, met or missed."""
    lines = ["| target | measured | bound | |", "|---|---:|---:|---|"]
    for what, value, op, bound in targets(results, disk):
        met = value >= bound if op == ">=" else value <= bound
        shown = f"{value:.1e}" if abs(bound) < 1e-3 else f"{value:.4g}"
        lines.append(f"| {what} | {shown} | {op} {bound:.4g} | {'met' if met else '**missed**'} |")
    sizes = ", ".join(f"{kind} {mib:.0f} MiB" for kind, mib in disk.items())
    title = "Targets of issues #6 and #15 (set for the embeddinggemma-300m config):"
    return "\n".join([title, "", *lines, "", f"Checkpoints on disk: {sizes}."])


def write_section(path: Path, section: str, *, start: str = MARK_START, end: str = MARK_END) -> None:
    """Replace a benchmark's marked section of `path` (keeping the rest), append it, or create the file;
    the markers default to this benchmark's (bench/peer.py passes its own)."""
    from gemma_embed.io.files import atomic_write

    block = f"{start}\n{section}\n{end}"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        first, last = text.find(start), text.find(end)
        if 0 <= first < last:
            text = text[:first] + block + text[last + len(end) :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = (
            "# Benchmarks\n\nWritten by the scripts in `bench/`: each one rewrites only its own marked section.\n\n"
            f"{block}\n"
        )
    with atomic_write(path) as handle:
        handle.write(text)


# ---- the run -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset",
        default="embeddinggemma-300m",
        help="model config preset (default: %(default)s; ignored with --smoke)",
    )
    parser.add_argument("--texts", type=int, help="texts in the mix (default 256; --smoke 24)")
    parser.add_argument("--batch-size", type=int, help="encode batch size (default 32; --smoke 8)")
    parser.add_argument(
        "--repeats", type=int, help="timed passes, the median is reported (default 3; --smoke 1)"
    )
    parser.add_argument("--latency-runs", type=int, help="one-query calls timed (default 50; --smoke 5)")
    parser.add_argument("--threads", type=int, help="threads per path (default: all usable cores; --smoke 1)")
    parser.add_argument(
        "--jobs",
        type=int,
        help="paths measured at once (default 1; --smoke: all usable cores, which makes its timings "
        "meaningless and its wall time short)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="2-layer tiny config and few texts: checks every path in seconds"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"markdown file to update (default: {DEFAULT_OUT.relative_to(REPO)}; --smoke: none)",
    )
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    smoke = args.smoke
    defaults = {
        "texts": 24 if smoke else 256,
        "batch_size": 8 if smoke else 32,
        "repeats": 1 if smoke else 3,
        "latency_runs": 5 if smoke else 50,
        "threads": 1 if smoke else len(os.sched_getaffinity(0)),
        "jobs": len(os.sched_getaffinity(0)) if smoke else 1,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        elif getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.out is None and not smoke:
        args.out = DEFAULT_OUT
    return args


def run(args: argparse.Namespace, argv: list[str]) -> str:
    """Build everything, measure every available path, return the markdown section."""
    from gemma_embed.export.onnx import export_onnx
    from gemma_embed.model import preset

    config = (
        preset("tiny").replace(num_hidden_layers=2, sliding_window_pattern=2)
        if args.smoke
        else preset(args.preset)
    )
    vocab = min(config.vocab_size, SMOKE_TOKENIZER_VOCAB if args.smoke else FULL_TOKENIZER_VOCAB)
    pools = text_pools()
    mix = text_mix(pools, args.texts)
    texts = [t for kind, _ in MIX for t in mix[kind]]
    with tempfile.TemporaryDirectory(prefix="gemma-embed-bench-") as tmp:
        work = Path(tmp)
        checkpoint, tokenizer, parameters = build_checkpoint(work, config, pools, vocab)
        variants = {**build_quantized(work, checkpoint), "onnx": str(work / "onnx")}
        paths = available_paths()
        job = {
            "work": str(work),
            "checkpoint": str(checkpoint),
            "variants": variants,
            "texts": texts,
            "queries": mix["query"],
            **{k: getattr(args, k) for k in ("batch_size", "repeats", "latency_runs", "threads")},
        }
        job_file = work / "job.json"
        job_file.write_text(json.dumps(job), encoding="utf-8")
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            # One worker (the default): export, then each path alone. More: the export overlaps the paths.
            export = pool.submit(export_onnx, checkpoint, variants["onnx"]) if "onnx-fp32" in paths else None

            def measure_path(name: str) -> dict[str, Any]:
                if name == "onnx-fp32" and export is not None:
                    export.result()
                print(f"measuring {name} ...", file=sys.stderr, flush=True)
                return measure(name, job_file, args.threads)

            futures = {name: pool.submit(measure_path, name) for name in paths}
            results = {name: future.result() for name, future in futures.items()}
        reference, scores = fidelity(work, paths)
        disk = {
            kind: directory_mib(Path(folder)) for kind, folder in variants.items() if Path(folder).is_dir()
        }
    for name in results:
        results[name].update(scores[name])
    settings = {
        "command": " ".join(["python bench/speed.py", *argv]),
        "machine": machine(),
        "preset": "tiny, 2 layers (--smoke)" if args.smoke else args.preset,
        "parameters": parameters,
        "tokenizer_vocab": tokenizer.vocab_size,
        "composition": ", ".join(f"{len(mix[kind])} {label}" for kind, label in MIX),
        "texts": len(texts),
        "tokens": sum(len(ids) for ids in tokenizer.encode(texts)[0]),
        "max_seq_length": config.max_seq_length,
        **{k: getattr(args, k) for k in ("batch_size", "repeats", "latency_runs", "threads")},
    }
    missing = [name for name in PATHS if name not in paths]
    section = render(settings, results, reference) + "\n\n" + render_targets(results, disk)
    if missing:
        section += f"\n\nNot measured (dependencies not installed): {', '.join(missing)}."
    return section


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.job)
        return 0
    from gemma_embed.errors import GemmaEmbedError

    try:
        section = run(args, argv)
    except GemmaEmbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(section)
    if args.out:
        write_section(args.out, section)
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
