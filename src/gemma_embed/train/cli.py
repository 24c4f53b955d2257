"""`gemma-embed train RECIPE [--resume] [--max-steps N] [--output DIR] [--qat int8|int4|mixed]`.

Runs in one process, or in N under `torchrun --nproc-per-node N -m gemma_embed train RECIPE` (DDP or FSDP,
as the recipe's train.parallel says). Rank 0 prints the summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gemma_embed import distributed
from gemma_embed.cli_args import add_out_arg
from gemma_embed.paths import runs_dir
from gemma_embed.quant.qat import QAT_TRANSFORMS
from gemma_embed.train.recipe import Recipe
from gemma_embed.train.trainer import Trainer


def run(args: argparse.Namespace) -> int:
    recipe = Recipe.load(args.recipe)
    output = args.out or runs_dir() / args.recipe.stem
    try:
        summary = Trainer(
            recipe,
            output,
            resume=args.resume,
            max_steps=args.max_steps,
            model_transform=QAT_TRANSFORMS[args.qat] if args.qat else None,
        ).fit()
        main = distributed.is_main()
    finally:
        distributed.teardown()
    if main:
        print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add the `train` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train an embedding model from a TOML recipe (see recipes/ and docs/training.md)",
        description="Train from a recipe; `torchrun --nproc-per-node N -m gemma_embed train ...` runs on N.",
    )
    parser.add_argument("recipe", type=Path, help="recipe file, e.g. recipes/smoke.toml")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in the output folder"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help="stop after global step N (the learning-rate schedule keeps the recipe's length)",
    )
    add_out_arg(parser, type=Path, metavar="DIR", help="run folder (default: runs/<recipe name>)")
    parser.add_argument(
        "--qat",
        choices=sorted(QAT_TRANSFORMS),
        help="quantization-aware training for this weight scheme (replaces the recipe's model.transform; "
        "pass it again with --resume); the final model is float: run `gemma-embed quantize` on it",
    )
    parser.set_defaults(func=run)
