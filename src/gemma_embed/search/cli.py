"""`gemma-embed embed-corpus`, `gemma-embed index build` and `gemma-embed search`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gemma_embed.cli_args import add_out_arg
from gemma_embed.search.vectors import PRECISIONS


def _add_field_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id-field", default=None, help="id column (default: id, else _id)")
    p.add_argument("--text-field", default="text", help="text column (default: text)")
    p.add_argument("--title-field", default="title", help="optional title column (default: title)")


def _add_embed_args(p: argparse.ArgumentParser) -> None:
    from gemma_embed.cli_args import add_model_args

    add_model_args(p)
    _add_field_args(p)
    p.add_argument("--dim", type=int, help="Matryoshka dimension (default: the model's full dimension)")
    p.add_argument("--batch-size", type=int, default=32)


def _fields(args: argparse.Namespace) -> Any:
    from gemma_embed.search.corpus import Fields

    return Fields(id=args.id_field, text=args.text_field, title=args.title_field or None)


def cmd_embed_corpus(args: argparse.Namespace) -> int:
    from gemma_embed.search.corpus import EmbedJob, embed_corpus

    job = EmbedJob(args.model, args.dim, args.precision, args.shard_size, args.batch_size, args.dtype)
    manifest = embed_corpus(
        args.input,
        args.out,
        job,
        fields=_fields(args),
        ray=args.ray,
        ray_address=args.ray_address,
        ray_actors=args.ray_actors,
        progress=not args.quiet,
    )
    print(f"{manifest['count']} documents in {manifest['shards']} shard(s) -> {args.out}")
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from gemma_embed.errors import ConfigError
    from gemma_embed.eval.encoders import load_encoder
    from gemma_embed.search.corpus import (
        embed_documents,
        is_embeddings_folder,
        read_documents,
        read_embeddings,
    )
    from gemma_embed.search.index import EXACT_BELOW, build_index

    source = Path(args.source)
    if is_embeddings_folder(source):
        if args.dim is not None:
            raise ConfigError("--dim applies when embedding documents; these embeddings are already computed")
        corpus = read_embeddings(source)
        docs, vectors = corpus.docs, corpus.vectors
        model, identity = corpus.manifest["model"], corpus.manifest["model_identity"]
    else:
        docs = read_documents(source, _fields(args))
        encoder = load_encoder(args.model, dtype=args.dtype)
        vectors = embed_documents(encoder, docs, args.dim, args.batch_size)
        model, identity = args.model, encoder.identity
    exact_below = EXACT_BELOW if args.exact_below is None else args.exact_below
    index = build_index(
        docs, vectors, model=model, model_identity=identity, precision=args.precision, exact_below=exact_below
    )
    index.save(args.out)
    kind = f"HNSW ({args.precision})" if index.ann is not None else "exact"
    print(f"{len(index)} documents, dim {index.dim}, {kind} index -> {args.out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from gemma_embed.search.index import load_index_encoder, open_index

    index = open_index(args.index)
    encoder = load_index_encoder(index, args.model, args.dtype)
    exact = True if args.exact else None
    for query, hits in zip(args.query, index.search(encoder, args.query, args.k, exact=exact), strict=True):
        if args.json:
            print(json.dumps({"query": query, "hits": [h.__dict__ for h in hits]}, ensure_ascii=False))
            continue
        print(f"query: {query}")
        for hit in hits:
            print(f"{hit.rank:>3}  {hit.score:.4f}  {hit.id}  {hit.label}")
    return 0


def register(subparsers: Any) -> None:
    """Add embed-corpus, index (build) and search to the gemma-embed command line."""
    p = subparsers.add_parser("embed-corpus", help="embed a document corpus into resumable Parquet shards")
    p.add_argument("input", help="a .jsonl/.csv/.tsv/.parquet table or a folder of .txt/.md files")
    p.add_argument("out", metavar="output", help="output folder (manifest.json + shard-NNNNN.parquet)")
    _add_embed_args(p)
    p.add_argument("--precision", choices=PRECISIONS, default="float32", help="stored vector type")
    p.add_argument("--shard-size", type=int, default=10_000, help="documents per shard (default: 10000)")
    p.add_argument("--ray", action="store_true", help="run on Ray Data (an actor pool holding the model)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--ray-actors", type=int, default=1, help="model actors (default: 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed_corpus)

    p = subparsers.add_parser("index", help="build a vector index for `gemma-embed search`")
    sub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="index an embed-corpus folder or a document corpus")
    b.add_argument("source", help="an embed-corpus output folder, or documents (as for embed-corpus)")
    add_out_arg(b, required=True, help="index folder to write")
    _add_embed_args(b)
    b.add_argument("--precision", choices=PRECISIONS, default="float32", help="ANN vector type")
    b.add_argument(
        "--exact-below",
        type=int,
        default=None,
        help="corpora smaller than this are searched exactly, without an HNSW graph (default: 10000)",
    )
    b.set_defaults(func=cmd_index_build)

    p = subparsers.add_parser("search", help="search an index: ranked titles and scores")
    p.add_argument("index", help="index folder (from `gemma-embed index build`)")
    p.add_argument("query", nargs="+", help="one or more queries")
    p.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    p.add_argument("-m", "--model", default=None, help="model to embed queries (default: the index's model)")
    p.add_argument("--dtype", default=None)
    p.add_argument("--exact", action="store_true", help="brute-force search even when an HNSW graph exists")
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.set_defaults(func=cmd_search)
