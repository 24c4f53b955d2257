"""`scifact_demo`: build (or reuse) an index over SciFact and answer a few queries with ranked titles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from gemma_embed.errors import DataError

DEMO_QUERIES: tuple[str, ...] = (
    "0-dimensional biomaterials show inductive properties.",
    "Vitamin D deficiency is associated with an increased risk of cardiovascular disease.",
    "Smoking during pregnancy affects the birth weight of the child.",
)


def scifact_demo(
    model: str,
    k: int = 5,
    *,
    queries: Sequence[str] = DEMO_QUERIES,
    dim: int | None = None,
    index_dir: str | Path | None = None,
    data: str | Path | None = None,
    out: Callable[[str], None] = print,
) -> Path:
    """Index SciFact's corpus with `model` (reused when an index of the same model and dim exists under
    `index_dir`, default `runs/search/`), search `queries` and print ranked titles and scores.
    Returns the index folder."""
    from gemma_embed.eval.encoders import load_encoder
    from gemma_embed.paths import data_root, runs_dir
    from gemma_embed.search.corpus import embed_documents, read_documents
    from gemma_embed.search.index import build_index, open_index

    corpus = Path(data) if data else data_root() / "scifact" / "corpus.jsonl"
    if not corpus.exists():
        raise DataError(f"{corpus}: SciFact corpus not found (set $GEMMA_EMBED_DATA or pass data=)")
    encoder = load_encoder(model)
    name = f"scifact-{encoder.identity[:12]}-{dim or 'full'}"
    folder = Path(index_dir) if index_dir else runs_dir() / "search" / name
    index = open_index(folder) if (folder / "index.json").is_file() else None
    if index is None or index.meta["model_identity"] != encoder.identity:
        docs = read_documents(corpus)
        vectors = embed_documents(encoder, docs, dim)
        index = build_index(docs, vectors, model=model, model_identity=encoder.identity)
        index.save(folder)
        out(f"built index of {len(index)} SciFact documents -> {folder}")
    else:
        out(f"reusing index {folder}")
    for query, hits in zip(queries, index.search(encoder, queries, k), strict=True):
        out("")
        out(f"query: {query}")
        for hit in hits:
            out(f"{hit.rank:>3}  {hit.score:.4f}  {hit.label[:100]}")
    return folder
