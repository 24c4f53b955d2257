"""`gemma-embed export FORMAT`: one command, a subcommand per runtime (each format module adds its own)."""

from __future__ import annotations

import argparse

from gemma_embed.export import gguf, onnx


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export onnx` and `export gguf`."""
    export = subparsers.add_parser(
        "export", help="export the embedding pipeline to another runtime (ONNX, GGUF for llama.cpp)"
    )
    formats = export.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx.add_format(formats)
    gguf.add_format(formats)
