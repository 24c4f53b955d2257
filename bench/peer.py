"""gemma-embed against llama.cpp, its on-device peer, on one random-weight checkpoint, in one run.

    make bench-peer                           # 300m config; writes its section of docs/benchmarks.md and
                                              # docs/results/peer-<machine>.json
    .venv/bin/python bench/peer.py --texts 64 --latency-runs 50 --threads 2
    .venv/bin/python bench/peer.py --smoke    # 2-layer tiny config, prints only (CI)

What is built (in a temporary directory, nothing is downloaded):
* a checkpoint of the exact `--preset` config (default embeddinggemma-300m) with random weights
  (`EmbeddingModel.initialize`, seed 0) and a SentencePiece BPE tokenizer (`tokenizer.model`, 32768 pieces,
  Gemma's special ids pad 0 / eos 1 / bos 2 / unk 3, byte fallback, no normalization) trained on the
  benchmark's texts, with the `tokenizer.json` that gemma-embed reads built from it, so that llama.cpp and
  gemma-embed see identical token ids (checked on every text; the embedding table keeps the config's rows);
* llama.cpp files: `gemma-embed export gguf --type f32`, then llama.cpp's own quantizer
  (`llama_model_quantize`, what its `llama-quantize` tool runs) to q8_0 and q4_0 (its q4_0 keeps the token
  table in Q6_K);
* gemma-embed `quantize` checkpoints int8 and int4 (`gemma_embed.io.checkpoint.save_quantized`).

Engines, each in its own subprocess with --threads threads (peak RSS, VmHWM, is the engine's own): llama.cpp
f32 / q8_0 / q4_0 through llama-cpp-python (`Llama(embedding=True, pooling mean, n_batch = n_ubatch = 2048,
flash attention on)`, `embed(texts, normalize=True)`), gemma-embed float32 / bfloat16 / int8 / int4
(`gemma_embed.load(path, dtype=...)`, `encode(batch_size=32, max_batch_tokens=2048)`), and gemma-embed's
int8 / int4 checkpoints exported with their codes (`gemma-embed export onnx`) run by ONNX Runtime
(`gemma_embed.export.onnx.OnnxEncoder`, the same batching; arena off and glibc's mmap threshold fixed, the
low-memory configuration; its process imports torch too, as gemma_embed does), all on the same strings (prompt already applied, as llama.cpp needs). Measured: tokens/s on the text mix of `bench/speed.py`
(median of --repeats passes) and on --uniform texts of exactly 256 tokens (one pass per repeat); single-query
latency p50/p99 over --latency-runs one-query calls on SciFact queries with the query prompt; load time;
cosine of the mix vectors to gemma-embed float32; llama.cpp's token ids against gemma-embed's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata, util
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # bench/speed.py: the text mix, peak RSS, the section writer
from machine import describe, machine_facts, machine_name  # bench/machine.py

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
RESULTS_DIR = REPO / "docs" / "results"
MARK_START, MARK_END = "<!-- bench:peer:start -->", "<!-- bench:peer:end -->"
ENGINES: dict[str, str] = {
    "llama-f32": "llama.cpp, f32 GGUF from `gemma-embed export gguf`",
    "llama-q8_0": "llama.cpp, q8_0 (llama.cpp's quantizer)",
    "llama-q4_0": "llama.cpp, q4_0 (llama.cpp's quantizer, token table Q6_K)",
    "gemma-fp32": "gemma-embed, float32",
    "gemma-bf16": "gemma-embed, bfloat16",
    "gemma-int8": "gemma-embed, int8 weights",
    "gemma-int4": "gemma-embed, int4 weights",
    "gemma-onnx-int8": "gemma-embed, int8 codes in ONNX Runtime (`export onnx`: MatMulNBits)",
    "gemma-onnx-int4": "gemma-embed, int4 codes in ONNX Runtime (`export onnx`: MatMulNBits)",
}
ONNX_PREFIX = "gemma-onnx-"
# The ONNX Runtime engines run as OnnxEncoder does by default (arena off) with glibc's mmap threshold fixed,
# the low-memory configuration bench/int4_memory.py measures; the process still imports torch (gemma_embed).
ONNX_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
LLAMA_QUANT = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
GEMMA_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "int8": None, "int4": None}
SPECIALS = {"pad": (0, "<pad>"), "eos": (1, "<eos>"), "bos": (2, "<bos>"), "unk": (3, "<unk>")}
UNIFORM_TOKENS = 256
BATCH_TOKENS = 2048
FULL_VOCAB, SMOKE_VOCAB = 32_768, 1024


# ---- the checkpoint ------------------------------------------------------------------------------------


def train_sentencepiece(texts: Sequence[str], vocab: int) -> bytes:
    """A Gemma-style SentencePiece BPE model (serialized): special ids pad 0, eos 1, bos 2, unk 3, byte
    fallback, single digits, no normalization and no dummy prefix (what llama.cpp's tokenizer reproduces)."""
    import sentencepiece as spm

    ids = {f"{name}_id": i for name, (i, _) in SPECIALS.items()}
    pieces = {f"{name}_piece": piece for name, (_, piece) in SPECIALS.items()}
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        character_coverage=0.9995,
        max_sentence_length=1 << 16,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
        **ids,
        **pieces,
    )
    return model.getvalue()


def sentencepiece_tokenizer_json(model_proto: bytes) -> Any:
    """The `tokenizers` BPE that encodes like the SentencePiece BPE model: its pieces as the vocabulary and,
    as merges, every split of a normal piece into two normal pieces, ranked by the piece's score (then id);
    spaces become "▁", no pre-tokenizer, byte fallback."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    normal = {p.piece: (p.score, i) for i, p in enumerate(proto.pieces) if p.type == 1}
    ranked = [
        (-score, i, piece[:k], piece[k:])
        for piece, (score, i) in normal.items()
        for k in range(1, len(piece))
        if piece[:k] in normal and piece[k:] in normal
    ]
    merges = [(left, right) for _, _, left, right in sorted(ranked)]
    tokenizer = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tokenizer.add_special_tokens([AddedToken(piece, normalized=False) for _, piece in SPECIALS.values()])
    return tokenizer


def write_sentencepiece_checkpoint(out: Path, model: Any, texts: Sequence[str], vocab: int) -> Path:
    """`model` (an EmbeddingModel) saved by `save_checkpoint` with a SentencePiece tokenizer trained on
    `texts`: `tokenizer.model` beside the `tokenizer.json` built from it."""
    from gemma_embed.io.checkpoint import Checkpoint, save_checkpoint
    from gemma_embed.io.tokenizer import TextTokenizer

    cfg = model.config
    proto = train_sentencepiece(texts, min(vocab, cfg.vocab_size))
    source = out.parent / f"{out.name}-tokenizer"
    source.mkdir(parents=True, exist_ok=True)
    sentencepiece_tokenizer_json(proto).save(str(source / "tokenizer.json"))
    tokenizer = TextTokenizer.from_file(
        source / "tokenizer.json",
        bos_id=cfg.bos_token_id,
        eos_id=cfg.eos_token_id,
        pad_id=cfg.pad_token_id,
        max_length=cfg.max_seq_length,
    )
    path = save_checkpoint(Checkpoint(model, tokenizer, source=source), out)
    (path / "tokenizer.model").write_bytes(proto)
    return path


def model_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of `text` as the model input, <bos> and <eos> included, before any truncation."""
    return len(tokenizer.text_ids([text])[0]) + 2


def longest_prefix(text: str, tokenizer: Any, tokens: int) -> str:
    """The longest word prefix of `text` with at most `tokens` model tokens."""
    if model_tokens(tokenizer, text) <= tokens:
        return text
    words = text.split(" ")
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if model_tokens(tokenizer, " ".join(words[:mid])) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).strip()


def uniform_texts(texts: Sequence[str], tokenizer: Any, n: int, tokens: int) -> list[str]:
    """n strings of exactly `tokens` model tokens: word prefixes of the longest texts, cycling through them
    (a text whose prefixes miss the count is skipped)."""
    out: list[str] = []
    for text in sorted(texts, key=len, reverse=True) * n:
        prefix = longest_prefix(text, tokenizer, tokens)
        if model_tokens(tokenizer, prefix) == tokens:
            out.append(prefix)
            if len(out) == n:
                return out
    raise RuntimeError(f"could not build {n} texts of {tokens} tokens from the mix")


def llama_quantize(f32_path: Path, out: Path, kind: str, threads: int) -> Path:
    """llama.cpp's own quantizer (the function its `llama-quantize` tool calls) on our f32 GGUF."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_QUANT[kind])
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(f32_path).encode(), str(out).encode(), params)
    if status != 0:
        raise RuntimeError(f"llama_model_quantize {kind} failed with status {status}")
    return out


def available_engines() -> list[str]:
    has_llama = util.find_spec("llama_cpp") is not None
    has_onnx = all(util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))
    return [
        name
        for name in ENGINES
        if (has_llama or not name.startswith("llama-")) and (has_onnx or not name.startswith(ONNX_PREFIX))
    ]


# ---- one engine, in its own process --------------------------------------------------------------------


def engine_encoder(name: str, job: dict[str, Any]) -> tuple[Callable[[list[str]], np.ndarray], Any]:
    """Load engine `name`; return its `texts -> normalized float32 vectors` function and the engine."""
    threads = job["threads"]
    if name.startswith("llama-"):
        import llama_cpp

        llm = llama_cpp.Llama(
            model_path=job["gguf"][name.removeprefix("llama-")],
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=job["batch_tokens"],
            n_batch=job["batch_tokens"],
            n_ubatch=job["batch_tokens"],
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=True,
            verbose=False,
        )
        return lambda texts: np.asarray(llm.embed(texts, normalize=True), dtype=np.float32), llm
    if name.startswith(ONNX_PREFIX):
        from gemma_embed.export.onnx import OnnxEncoder

        onnx = OnnxEncoder(job["onnx"][name.removeprefix(ONNX_PREFIX)], threads=threads)
        return lambda texts: onnx.encode(texts, batch_size=32, max_batch_tokens=job["batch_tokens"]), onnx
    import torch

    import gemma_embed

    torch.set_num_threads(threads)
    kind = name.removeprefix("gemma-")
    path = job["variants"].get(kind, job["checkpoint"])
    embedder = gemma_embed.load(path, dtype=GEMMA_DTYPES[kind])
    return (
        lambda texts: embedder.encode(
            texts, batch_size=32, max_batch_tokens=job["batch_tokens"], show_progress=False
        ),
        embedder,
    )


def timed(encode: Callable[[list[str]], np.ndarray], texts: list[str], repeats: int) -> tuple[float, Any]:
    seconds, vectors = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = encode(texts)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), vectors


def run_worker(name: str, job_file: Path) -> None:
    """Measure one engine; write `<work>/<name>.json` and its mix vectors `<name>.npy`."""
    warnings.simplefilter("ignore")
    job = json.loads(job_file.read_text(encoding="utf-8"))
    start = time.perf_counter()
    encode, engine = engine_encoder(name, job)
    load_s = time.perf_counter() - start
    texts, uniform, queries = job["texts"], job["uniform"], job["queries"]
    start = time.perf_counter()
    encode(texts[:32])  # warm-up (gemma-embed compiles its fused kernels here)
    encode(queries[:1])
    warmup_s = time.perf_counter() - start
    mix_s, vectors = timed(encode, texts, job["repeats"])
    uniform_s, _ = timed(encode, uniform, job["repeats"])
    latencies = []
    for i in range(job["latency_runs"]):
        start = time.perf_counter()
        encode([queries[i % len(queries)]])
        latencies.append((time.perf_counter() - start) * 1000)
    result = {
        "load_s": load_s,
        "warmup_s": warmup_s,
        "mix_s": mix_s,
        "uniform_s": uniform_s,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "peak_rss_mib": speed.peak_rss_mib(),
    }
    if name.startswith("llama-"):  # token ids as llama.cpp's embed() makes them (add_bos adds <eos> too)
        ids = [engine.tokenize(t.encode("utf-8")) for t in texts + uniform + queries]
        result["token_mismatches"] = sum(a != b for a, b in zip(ids, job["ids"], strict=True))
    work = Path(job["work"])
    np.save(work / f"{name}.npy", np.asarray(vectors, dtype=np.float32))
    (work / f"{name}.json").write_text(json.dumps(result), encoding="utf-8")


def measure(name: str, job_file: Path, threads: int) -> dict[str, Any]:
    """Run the worker of engine `name` in a fresh interpreter; its failure stops the benchmark."""
    env = {**os.environ, **speed.WORKER_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if name.startswith(ONNX_PREFIX):
        env.update(ONNX_ENV)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--job", str(job_file)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"engine {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((job_file.parent / f"{name}.json").read_text(encoding="utf-8"))


# ---- report --------------------------------------------------------------------------------------------


def best(results: dict[str, dict[str, Any]], prefix: str, key: str) -> str | None:
    """The engine with `prefix` with the lowest `key` (seconds or ms)."""
    names = [n for n in results if n.startswith(prefix)]
    return min(names, key=lambda n: results[n][key]) if names else None


def ratios(results: dict[str, dict[str, Any]]) -> list[tuple[str, float, str, float]]:
    """(what, measured, comparison, bound): issue 15's targets that this run measures."""
    rows = []
    for key, label in (("mix_s", "text mix"), ("uniform_s", f"uniform {UNIFORM_TOKENS}-token batches")):
        ours, theirs = best(results, "gemma-", key), best(results, "llama-", key)
        if ours and theirs:
            speedup = results[theirs][key] / results[ours][key]
            rows.append(
                (
                    f"tokens/s, {label}: best gemma-embed ({ours}) / best llama.cpp ({theirs})",
                    speedup,
                    ">=",
                    1.2,
                )
            )
    for ours, theirs in (
        ("gemma-int8", "llama-q8_0"),
        ("gemma-int4", "llama-q4_0"),
        ("gemma-onnx-int8", "llama-q8_0"),
        ("gemma-onnx-int4", "llama-q4_0"),
    ):
        if ours in results and theirs in results:
            rows.append(
                (
                    f"query p50: {ours} / {theirs}",
                    results[ours]["p50_ms"] / results[theirs]["p50_ms"],
                    "<=",
                    1.0,
                )
            )
    if lat := best(results, "gemma-", "p50_ms"):
        rows.append(
            (
                f"query p99 / p50 of the fastest gemma-embed path ({lat})",
                results[lat]["p99_ms"] / results[lat]["p50_ms"],
                "<=",
                2.0,
            )
        )
    for name in ("gemma-int4", "gemma-onnx-int4"):
        if name in results:
            rows.append((f"{name} peak RSS (MB)", results[name]["peak_rss_mib"] * 2**20 / 1e6, "<=", 400.0))
    if "cos_mean" in results.get("llama-f32", {}):
        rows.append(
            (
                "llama.cpp f32 mean cosine to gemma-embed float32",
                results["llama-f32"]["cos_mean"],
                ">=",
                0.9999,
            )
        )
    return rows


def ids_line(settings: dict[str, Any]) -> str:
    mismatches = settings["token_mismatches"]
    if mismatches is None:
        return "token ids not compared (no llama.cpp engine)"
    if mismatches == 0:
        return "llama.cpp's token ids equal gemma-embed's on every text"
    return f"llama.cpp's token ids differ from gemma-embed's on {mismatches} texts"


def render(settings: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"### Measured: {settings['machine_name']} (`bench/peer.py`)",
        "",
        f"Command: `{settings['command']}`",
        "",
        *(f"- {line}" for line in settings["machine"]),
        f"- Model: random weights, `{settings['preset']}` config; SentencePiece BPE tokenizer with "
        f"{settings['tokenizer_vocab']} pieces trained on the texts; {ids_line(settings)} ({settings['llama_cpp']})",
        f"- Texts: the `bench/speed.py` mix, {settings['composition']}, {settings['mix_tokens']} tokens; "
        f"uniform: {settings['uniform']} texts x {UNIFORM_TOKENS} tokens; queries: {settings['latency_runs']} "
        f"one-query calls ({settings['query_tokens']:.1f} tokens on average); {settings['threads']} threads "
        f"per engine, each engine in its own process; {settings['repeats']} passes (median)",
        "- llama.cpp: `Llama(embedding=True, pooling_type=MEAN, n_ctx = n_batch = n_ubatch = 2048, flash_attn=True)`, "
        "`embed(texts, normalize=True)`; gemma-embed: `load(path, dtype)`, "
        "`encode(batch_size=32, max_batch_tokens=2048)`; cosine: mean / min over the mix against gemma-fp32",
        "",
        "| engine | mix tok/s | uniform tok/s | query p50 (ms) | query p99 (ms) | peak RSS (MiB) | load (s) "
        "| cos mean | cos min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} ({ENGINES[name]}) | {settings['mix_tokens'] / r['mix_s']:.0f} "
            f"| {settings['uniform_tokens'] / r['uniform_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {r['load_s']:.1f} | {r['cos_mean']:.6f} | {r['cos_min']:.5f} |"
        )
    lines += [
        "",
        "Issue 15's targets, as measured here:",
        "",
        "| target | measured | bound | |",
        "|---|---:|---:|---|",
    ]
    for what, value, op, bound in ratios(results):
        met = value >= bound if op == ">=" else value <= bound
        lines.append(f"| {what} | {value:.4g} | {op} {bound:g} | {'met' if met else '**missed**'} |")
    return "\n".join(lines)


# ---- the run -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="embeddinggemma-300m", help="model config (default: %(default)s)")
    parser.add_argument("--texts", type=int, help="texts in the mix (default 64; --smoke 12)")
    parser.add_argument("--uniform", type=int, help=f"{UNIFORM_TOKENS}-token texts (default 32; --smoke 4)")
    parser.add_argument("--repeats", type=int, help="timed passes, median reported (default 1)")
    parser.add_argument("--latency-runs", type=int, help="one-query calls timed (default 100; --smoke 5)")
    parser.add_argument("--threads", type=int, help="threads per engine (default 2; --smoke 1)")
    parser.add_argument("--engines", help="comma-separated subset of: " + ", ".join(ENGINES))
    parser.add_argument("--smoke", action="store_true", help="2-layer tiny config, few texts (CI)")
    parser.add_argument(
        "--out", type=Path, help="markdown file to update (default docs/benchmarks.md; --smoke: none)"
    )
    parser.add_argument(
        "--json", type=Path, help="results file (default docs/results/peer-<machine>.json; --smoke: none)"
    )
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = {
        "texts": 12 if args.smoke else 64,
        "uniform": 4 if args.smoke else 32,
        "repeats": 1,
        "latency_runs": 5 if args.smoke else 100,
        "threads": 1 if args.smoke else 2,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        elif getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    available = available_engines()
    if args.engines:
        args.engines = [e.strip() for e in args.engines.split(",")]
        if unknown := [e for e in args.engines if e not in ENGINES]:
            parser.error(f"unknown engines: {', '.join(unknown)}")
        if missing := [e for e in args.engines if e not in available]:
            parser.error(f"not installed (pip install -e '.[llama]'): {', '.join(missing)}")
    else:
        args.engines = available
    if "gemma-fp32" not in args.engines:
        args.engines.insert(0, "gemma-fp32")  # the reference of every cosine
    if not args.smoke:
        args.out = args.out or DEFAULT_OUT
        args.json = args.json or RESULTS_DIR / f"peer-{machine_name(machine_facts())}.json"
    return args


def build(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Checkpoint, GGUF files and quantized checkpoints; the job every worker reads."""
    import gemma_embed
    from gemma_embed.export.gguf import export_gguf
    from gemma_embed.export.onnx import export_onnx
    from gemma_embed.io.checkpoint import save_quantized
    from gemma_embed.model import EmbeddingModel, preset

    config = (
        preset("tiny").replace(num_hidden_layers=2, sliding_window_pattern=2, vocab_size=SMOKE_VOCAB)
        if args.smoke
        else preset(args.preset)
    )
    pools = speed.text_pools()
    mix = speed.text_mix(pools, args.texts)
    texts = [t for kind, _ in speed.MIX for t in mix[kind]]
    model = EmbeddingModel(config).initialize(seed=0)
    corpus = [t for pool in pools.values() for t in pool]
    checkpoint = write_sentencepiece_checkpoint(
        work / "checkpoint", model, corpus, SMOKE_VOCAB if args.smoke else FULL_VOCAB
    )
    del model
    reference = gemma_embed.load(checkpoint, dtype="float32")
    tokenizer = reference.tokenizer
    # Texts longer than the model takes are cut to a word prefix that fits, so that neither engine truncates
    # (gemma-embed keeps <eos> when it truncates, llama.cpp's embed() cuts it).
    batch_tokens = min(BATCH_TOKENS, config.max_seq_length)
    texts = [longest_prefix(t, tokenizer, batch_tokens) for t in texts]
    mix["query"] = [longest_prefix(t, tokenizer, batch_tokens) for t in mix["query"]]
    uniform = uniform_texts(texts, tokenizer, args.uniform, UNIFORM_TOKENS)
    queries = mix["query"]
    variants: dict[str, str] = {}
    onnx: dict[str, str] = {}
    for scheme in ("int8", "int4"):
        if f"gemma-{scheme}" in args.engines or f"{ONNX_PREFIX}{scheme}" in args.engines:
            variants[scheme] = str(save_quantized(reference.checkpoint, scheme, work / scheme))
        if f"{ONNX_PREFIX}{scheme}" in args.engines:
            export_onnx(variants[scheme], work / f"onnx-{scheme}")
            onnx[scheme] = str(work / f"onnx-{scheme}")
    del reference
    gguf: dict[str, str] = {}
    if any(e.startswith("llama-") for e in args.engines):
        gguf["f32"] = str(export_gguf(checkpoint, work / "model-f32.gguf", gguf_type="f32"))
        for kind in LLAMA_QUANT:
            if f"llama-{kind}" in args.engines:
                gguf[kind] = str(
                    llama_quantize(Path(gguf["f32"]), work / f"model-{kind}.gguf", kind, args.threads)
                )
    ids = tokenizer.encode(texts + uniform + queries)[0]
    return {
        "work": str(work),
        "checkpoint": str(checkpoint),
        "variants": variants,
        "onnx": onnx,
        "gguf": gguf,
        "texts": texts,
        "uniform": uniform,
        "queries": queries,
        "ids": ids,
        "batch_tokens": batch_tokens,
        "mix_tokens": sum(len(i) for i in ids[: len(texts)]),
        "uniform_tokens": sum(len(i) for i in ids[len(texts) : len(texts) + len(uniform)]),
        "query_tokens": float(np.mean([len(i) for i in ids[len(texts) + len(uniform) :]])),
        "composition": ", ".join(f"{len(mix[kind])} {label}" for kind, label in speed.MIX),
        "tokenizer_vocab": tokenizer.vocab_size,
        **{k: getattr(args, k) for k in ("repeats", "latency_runs", "threads")},
    }


def run(args: argparse.Namespace, argv: list[str]) -> tuple[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="gemma-embed-peer-") as tmp:
        work = Path(tmp)
        job = build(work, args)
        job_file = work / "job.json"
        job_file.write_text(json.dumps(job), encoding="utf-8")
        results = {}
        for name in args.engines:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            results[name] = measure(name, job_file, args.threads)
        ref = np.load(work / "gemma-fp32.npy")
        for name in results:
            vectors = np.load(work / f"{name}.npy")
            cosine = (vectors * ref).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref, axis=1))
            results[name].update(cos_mean=float(cosine.mean()), cos_min=float(cosine.min()))
            results[name]["mix_tokens_per_s"] = job["mix_tokens"] / results[name]["mix_s"]
            results[name]["uniform_tokens_per_s"] = job["uniform_tokens"] / results[name]["uniform_s"]
        disk = {kind: Path(p).stat().st_size / 2**20 for kind, p in job["gguf"].items()}
    try:
        llama_version = f"llama-cpp-python {metadata.version('llama-cpp-python')}"
    except metadata.PackageNotFoundError:
        llama_version = "llama-cpp-python not installed"
    facts = machine_facts()
    settings = {
        "command": " ".join(["python bench/peer.py", *argv]),
        "machine": describe(facts),
        "machine_facts": facts,
        "machine_name": machine_name(facts),
        "cpu_kind": facts["kind"],
        "preset": "tiny, 2 layers (--smoke)" if args.smoke else args.preset,
        "llama_cpp": llama_version,
        "uniform": len(job["uniform"]),
        "token_mismatches": (
            sum(r["token_mismatches"] for r in results.values() if "token_mismatches" in r)
            if any("token_mismatches" in r for r in results.values())
            else None
        ),
        "gguf_mib": disk,
        **{
            k: job[k]
            for k in ("mix_tokens", "uniform_tokens", "query_tokens", "composition", "tokenizer_vocab")
        },
        **{k: getattr(args, k) for k in ("texts", "repeats", "latency_runs", "threads")},
    }
    report = {
        "settings": settings,
        "results": results,
        "targets": [{"what": w, "measured": v, "op": op, "bound": b} for w, v, op, b in ratios(results)],
    }
    return render(settings, results), report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.job)
        return 0
    from gemma_embed.errors import GemmaEmbedError
    from gemma_embed.io.files import write_json

    try:
        section, report = run(args, argv)
    except GemmaEmbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(section)
    if args.json:
        write_json(args.json, report)
        print(f"\nwrote {args.json}", file=sys.stderr)
    if args.out:
        speed.write_section(args.out, section, start=MARK_START, end=MARK_END)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
