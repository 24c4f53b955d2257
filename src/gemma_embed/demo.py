"""`make demo`: rank a few documents for a query, then semantic search over SciFact's 5,183 abstracts.

    python -m gemma_embed.demo [--model PATH] [--no-search]

Without --model it uses the default model (gemma-embed-mini, shipped in the package). The SciFact index is
built once (about a minute on 2 cores) under runs/search/ and reused; it needs ../shared/data/scifact.
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
    parser.add_argument("--no-search", action="store_true", help="skip the SciFact search part")
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
    if args.no_search:
        return 0
    from gemma_embed.search import scifact_demo

    print("\nSemantic search over SciFact (gemma-embed search works the same on your own corpus):")
    try:
        scifact_demo(str(model.name_or_path), 3)
    except GemmaEmbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
