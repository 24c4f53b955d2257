"""`make demo`: embed a few documents and rank them for a query.

    python -m gemma_embed.demo [--model PATH]

Without --model it uses the default model; where none is shipped it says what is missing and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from gemma_embed.cli import add_model_args
from gemma_embed.encode import load
from gemma_embed.errors import GemmaEmbedError

QUERY = "Which planet is known as the Red Planet?"
DOCUMENTS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gemma_embed.demo", description=__doc__.splitlines()[0])
    add_model_args(parser)
    args = parser.parse_args(argv)
    try:
        model = load(args.model, dtype=args.dtype)
    except GemmaEmbedError as exc:
        print(f"error: {exc}\n  usage: make demo MODEL=/path/to/embeddinggemma-300m", file=sys.stderr)
        return 2
    scores = model.similarity(model.encode_query(QUERY), model.encode_document(DOCUMENTS))[0]
    print(f"model: {model.name_or_path}\nquery: {QUERY}")
    for rank, i in enumerate(scores.argsort()[::-1], start=1):
        print(f"{rank}. {scores[i]:.4f}  {DOCUMENTS[i]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
