"""`gemma-embed quantize MODEL --scheme int8|int4|mixed --out DIR` (registered by gemma_embed.cli)."""

from __future__ import annotations

import argparse

from gemma_embed.cli_args import add_out_arg
from gemma_embed.io.checkpoint import save_quantized
from gemma_embed.quant.weights import SCHEMES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `quantize` subcommand."""
    p = subparsers.add_parser(
        "quantize",
        help="write a per-block int8/int4/mixed quantized checkpoint that `load(DIR)` runs",
        description="Post-training per-block (32) symmetric weight quantization; see docs/quantization.md.",
    )
    p.add_argument("model", help="float checkpoint directory (or a name `load` resolves)")
    p.add_argument(
        "--scheme", choices=SCHEMES, default="mixed", help="default: mixed (int4 + int8 attention)"
    )
    add_out_arg(p, required=True, help="output checkpoint directory")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    from gemma_embed.encode import load

    embedder = load(args.model, dtype="float32")
    out = save_quantized(embedder.checkpoint, args.scheme, args.out, overwrite=args.overwrite)
    print(f"wrote {args.scheme} checkpoint to {out}")
    return 0
