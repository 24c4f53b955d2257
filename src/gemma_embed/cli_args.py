"""Command-line arguments shared by every command that loads a model (the top-level CLI and each package's
cli module). It sits at the encode layer, so a command module needs nothing from `gemma_embed.cli`, which
imports the command modules."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gemma_embed.encode import Embedder

# Free text, checked by the loader, so float16 gets its reason rather than argparse's "invalid choice".
DTYPE_HELP = "float32 or bfloat16 (default: as stored; float16 is refused: EmbeddingGemma overflows it)"


def default_model() -> str:
    return os.environ.get("GEMMA_EMBED_MODEL", "default")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """--model and --dtype, shared by every subcommand that loads a model."""
    parser.add_argument(
        "-m",
        "--model",
        default=default_model(),
        help="checkpoint directory, 'default', or a Hugging Face id already downloaded "
        "(default: $GEMMA_EMBED_MODEL or 'default')",
    )
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)


def load_model(args: argparse.Namespace) -> Embedder:
    from gemma_embed.encode import load

    return load(args.model, dtype=args.dtype)


# Every command that writes something names it `--out` (`--output` is accepted as an alias).
OUT_FLAGS = ("--out", "--output")
# Every command that computes on a device defaults to the CPU; `--device cuda` opts in.
DEFAULT_DEVICE = "cpu"


def add_out_arg(parser: argparse.ArgumentParser, *flags: str, **kwargs: object) -> None:
    """`--out` (alias `--output`, plus any short `flags` such as "-o"), stored as `args.out`."""
    parser.add_argument(*flags, *OUT_FLAGS, dest="out", **kwargs)  # type: ignore[arg-type]


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """`--device` with the one default every command shares."""
    parser.add_argument("--device", default=DEFAULT_DEVICE, help=f"torch device (default: {DEFAULT_DEVICE})")
