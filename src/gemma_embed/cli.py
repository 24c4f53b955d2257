"""`gemma-embed` command line. Each subcommand is a module with `register(subparsers)`.

Errors the package raises on purpose (GemmaEmbedError) are printed as one line on stderr with exit code 2;
nothing prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from gemma_embed.cli_args import DTYPE_HELP, add_model_args, add_out_arg, default_model, load_model
from gemma_embed.errors import DataError, GemmaEmbedError, InputError
from gemma_embed.io.files import atomic_write
from gemma_embed.io.tables import parse_json_lines
from gemma_embed.model import EmbeddingModel

# Subcommands that live beside the code they drive; each module exposes register(subparsers).
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "gemma_embed.eval.cli",
    "gemma_embed.train.data.sources.build",
    "gemma_embed.train.data.corpus",
    "gemma_embed.train.data.tokenizer",
    "gemma_embed.train.data.teacher",
    "gemma_embed.train.data.mining",
    "gemma_embed.train.init.static",
    "gemma_embed.train.orchestration.pipeline",
    "gemma_embed.train.orchestration.ablation",
    "gemma_embed.train.orchestration.curves",
    "gemma_embed.train.cli",
    "gemma_embed.train.orchestration.soup",
    "gemma_embed.train.orchestration.mixture_cli",
    "gemma_embed.train.init.adapt",
    "gemma_embed.quant.cli",
    "gemma_embed.export.cli",
    "gemma_embed.search.cli",
    "gemma_embed.serve.cli",
)
EXAMPLES = """examples:
  gemma-embed info ./embeddinggemma-300m
  gemma-embed similarity "Which planet is red?" "Mars is red." "Venus is hot." -m ./embeddinggemma-300m
  gemma-embed encode -m ./embeddinggemma-300m -i docs.txt --task document -o vectors.npy
  cat queries.jsonl | gemma-embed encode -m ./embeddinggemma-300m --task query --dim 256 > q.jsonl
"""


def add_prompt_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--task", help="prompt name: query, document, STS, Classification, Clustering, ...")
    group.add_argument("--prompt", help="a literal prompt string prepended to every text")


# ---- encode -----------------------------------------------------------------------------------------


def read_inputs(stream: TextIO, name: str, fmt: str, field: str) -> tuple[list[str], list[object]]:
    """Texts (and ids, when JSONL rows carry an `id`) from lines or JSONL."""
    texts, ids = [], []
    lines = (line.rstrip("\n") for line in stream)
    if fmt == "lines":
        texts = list(lines)
        return _nonempty(texts, name), list(range(len(texts)))
    for lineno, row in parse_json_lines(lines, name):
        if isinstance(row, str):
            texts.append(row)
            ids.append(len(ids))
        elif isinstance(row, dict) and isinstance(row.get(field), str):
            texts.append(row[field])
            ids.append(row.get("id", len(ids)))
        else:
            raise DataError(
                f"{name}, line {lineno}: expected a JSON string or an object with a string field {field!r}"
            )
    return _nonempty(texts, name), ids


def _nonempty(texts: list[str], name: str) -> list[str]:
    if not texts:
        raise DataError(f"{name}: no input texts")
    return texts


def cmd_encode(args: argparse.Namespace) -> int:
    source = sys.stdin if args.input == "-" else None
    name = "<stdin>" if source else args.input
    fmt = args.format or ("jsonl" if name.endswith((".jsonl", ".json")) else "lines")
    if source is None:
        path = Path(args.input)
        if not path.is_file():
            raise DataError(f"{path}: no such input file")
        with path.open(encoding="utf-8") as stream:
            texts, ids = read_inputs(stream, name, fmt, args.field)
    else:
        texts, ids = read_inputs(source, name, fmt, args.field)
    model = load_model(args)
    vectors = model.encode(
        texts,
        task=args.task,
        prompt=args.prompt,
        dim=args.dim,
        batch_size=args.batch_size,
        show_progress=not args.quiet,
        long_text=args.long_text,
    )
    if args.out and args.out.endswith(".npy"):
        write_npy(Path(args.out), vectors)
    else:
        out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
        try:
            for ident, vector in zip(ids, vectors, strict=True):
                out.write(json.dumps({"id": ident, "embedding": [round(float(x), 7) for x in vector]}) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
    return 0


def write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


# ---- similarity ---------------------------------------------------------------------------------------


def cmd_similarity(args: argparse.Namespace) -> int:
    model = load_model(args)
    query = model.encode(args.query, task=args.query_task, dim=args.dim)
    docs = model.encode(args.documents, task=args.document_task, dim=args.dim)
    scores = model.similarity(query, docs)[0]
    for rank, i in enumerate(np.argsort(-scores), start=1):
        print(f"{rank:>3}  {scores[i]:.4f}  {args.documents[i]}")
    return 0


# ---- info ---------------------------------------------------------------------------------------------


def parameter_counts(model: EmbeddingModel) -> dict[str, int]:
    parts = {"token embeddings": 0, "attention": 0, "feed-forward": 0, "norms": 0, "dense head": 0}
    for name, param in model.named_parameters():
        if name.startswith("head."):
            part = "dense head"
        elif "embed_tokens" in name:
            part = "token embeddings"
        elif "norm" in name:
            part = "norms"
        elif ".self_attn." in name:
            part = "attention"
        else:
            part = "feed-forward"
        parts[part] += param.numel()
    parts["total"] = sum(parts.values())
    return parts


def cmd_convert(args: argparse.Namespace) -> int:
    from gemma_embed.dtypes import resolve_dtype
    from gemma_embed.export.card import check_card_dims
    from gemma_embed.io.checkpoint import load_checkpoint, save_checkpoint

    card = None
    if args.card:  # checked before anything is written
        if not Path(args.card).is_file():
            raise InputError(f"--card {args.card}: no such file")
        card = Path(args.card).read_text(encoding="utf-8")
    ckpt = load_checkpoint(args.model, dtype=resolve_dtype(args.dtype))
    if card is not None:
        check_card_dims(card, ckpt.model.config.matryoshka_dims, f"--card {args.card}")
    out = save_checkpoint(ckpt, args.out, overwrite=args.overwrite)
    if card is not None:
        with atomic_write(out / "README.md") as handle:
            handle.write(card)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    model = load_model(args)
    cfg = model.config
    info = {
        "model": model.name_or_path,
        "dtype": str(model.dtype).removeprefix("torch."),
        "dtype_reason": model.dtype_reason,
        "parameters": parameter_counts(model.model),
        "config": {
            "layers": cfg.num_hidden_layers,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "attention_heads": cfg.num_attention_heads,
            "kv_heads": cfg.num_key_value_heads,
            "head_dim": cfg.head_dim,
            "vocab_size": cfg.vocab_size,
            "sliding_window": cfg.sliding_window,
            "layer_types": f"{cfg.layer_types.count('sliding_attention')} sliding, "
            f"{cfg.layer_types.count('full_attention')} full",
            "max_seq_length": cfg.max_seq_length,
            "dense_head": [cfg.hidden_size, *cfg.dense_dims],
            "matryoshka_dims": list(cfg.matryoshka_dims),
        },
        "default_prompt": model.default_prompt_name,
        "prompts": model.prompts,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model     {info['model']}  ({info['dtype']}: {info['dtype_reason']})")
    for key, value in info["config"].items():
        print(f"  {key:<18} {value}")
    print("parameters")
    for key, value in info["parameters"].items():
        print(f"  {key:<18} {value:>13,}")
    print(f"prompts (default: {model.default_prompt_name})")
    for key, value in model.prompts.items():
        print(f"  {key:<26} {value!r}")
    return 0


# ---- wiring -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemma-embed",
        description="EmbeddingGemma text embeddings: encode, compare, evaluate, train.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="embed lines or JSONL into JSONL or .npy")
    add_model_args(p)
    add_prompt_args(p)
    p.add_argument("-i", "--input", default="-", help="input file (default: stdin)")
    p.add_argument("--format", choices=["lines", "jsonl"], help="input format (default: by file extension)")
    p.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    add_out_arg(p, "-o", help="output .npy or .jsonl file (default: JSONL on stdout)")
    p.add_argument("--dim", type=int, help="Matryoshka dimension, e.g. 768, 512, 256, 128")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--long-text", choices=["truncate", "chunk"], default="truncate")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("similarity", help="rank documents for a query by cosine similarity")
    add_model_args(p)
    p.add_argument("query")
    p.add_argument("documents", nargs="+")
    p.add_argument("--query-task", default="query", help="prompt for the query (default: query)")
    p.add_argument("--document-task", default="document", help="prompt for documents (default: document)")
    p.add_argument("--dim", type=int)
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("info", help="config, parameter counts by part, prompts and dtype of a model")
    p.add_argument("model", nargs="?", default=default_model())
    p.add_argument("--dtype", default=None, help=DTYPE_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "convert",
        help="re-save a checkpoint in another dtype (e.g. bfloat16 to halve it), with an optional model card",
    )
    p.add_argument("model", help="checkpoint directory")
    add_out_arg(p, required=True, help="output checkpoint directory")
    p.add_argument("--dtype", default="bfloat16", help="float32 or bfloat16 (default bfloat16)")
    p.add_argument(
        "--card", help="markdown file copied to OUT/README.md (its Matryoshka dims must be the model's)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.set_defaults(func=cmd_convert)

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.run_command = main  # for commands made of commands (`pipeline`), which sit below the CLI
    try:
        return int(args.func(args) or 0)
    except GemmaEmbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
