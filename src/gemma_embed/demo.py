"""`make demo`: rank a few documents for a query, then semantic search over 500 SciFact abstracts.

    python -m gemma_embed.demo [--model PATH] [--dtype DTYPE] [--no-search] [--full-scifact]

Without --model it uses the default model (gemma-embed-mini, shipped in the package). The search part
indexes the 283 abstracts judged for SciFact's test queries plus the corpus's first others, 500 in all
(`gemma_embed.search.demo.demo_documents`), once, under runs/search/, and reuses that index on the next run;
--full-scifact indexes all 5,183 abstracts instead. It needs ../shared/data/scifact. Timed in
docs/search.md ("make demo").
"""

from __future__ import annotations

import argparse
import sys

from gemma_embed.cli_args import add_model_args
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
    parser.add_argument(
        "--full-scifact", action="store_true", help="index all 5,183 SciFact abstracts, not the demo's 500"
    )
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
    from gemma_embed.search.demo import DEMO_SUBSET

    part = "all of SciFact" if args.full_scifact else f"{DEMO_SUBSET:,} SciFact abstracts"
    print(f"\nSemantic search over {part} (gemma-embed search works the same on your own corpus):")
    try:
        scifact_demo(
            str(model.name_or_path), 3, subset=None if args.full_scifact else DEMO_SUBSET, dtype=args.dtype
        )
    except GemmaEmbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
