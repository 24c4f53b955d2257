"""`scifact_demo`: build (or reuse) an index over SciFact and answer a few queries with ranked titles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from gemma_embed.errors import DataError

if TYPE_CHECKING:
    from gemma_embed.search.corpus import Document

# The demo's part of SciFact: 500 of its 5,183 abstracts, so that `make demo` embeds in about a minute on
# 2 cores; `scifact_demo(..., subset=None)` (`python -m gemma_embed.demo --full-scifact`) indexes them all.
DEMO_SUBSET = 500
EMBED_CHUNK = 64  # documents per progress-bar step

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
    subset: int | None = DEMO_SUBSET,
    dtype: str | None = None,
    progress: bool = True,
    out: Callable[[str], None] = print,
) -> Path:
    """Index SciFact's corpus, or the `subset` of it that `demo_documents` names, with `model` (reused when
    an index of the same model, part and dim exists under `index_dir`, default `runs/search/`), search
    `queries` and print ranked titles and scores. Returns the index folder."""
    from gemma_embed.eval.encoders import load_encoder
    from gemma_embed.paths import data_root, runs_dir
    from gemma_embed.search.corpus import embed_documents
    from gemma_embed.search.index import build_index, open_index

    corpus = Path(data) if data else data_root() / "scifact" / "corpus.jsonl"
    if not corpus.exists():
        raise DataError(f"{corpus}: SciFact corpus not found (set $GEMMA_EMBED_DATA or pass data=)")
    encoder = load_encoder(model, dtype=dtype)
    part = "" if subset is None else f"{subset}-"
    name = f"scifact-{part}{encoder.identity[:12]}-{dim or 'full'}"
    folder = Path(index_dir) if index_dir else runs_dir() / "search" / name
    index = open_index(folder) if (folder / "index.json").is_file() else None
    if index is None or index.meta["model_identity"] != encoder.identity:
        docs = demo_documents(corpus, subset)
        # Steps of similar lengths (as one `encode` call would batch them), so that little is padding.
        order = np.argsort([len(doc.embedded_text) for doc in docs], kind="stable")
        vectors: np.ndarray | None = None
        bar = tqdm(total=len(docs), desc="embedding SciFact", unit="doc", disable=not progress)
        for start in range(0, len(docs), EMBED_CHUNK):
            rows = order[start : start + EMBED_CHUNK]
            part = embed_documents(encoder, [docs[i] for i in rows], dim)
            if vectors is None:
                vectors = np.empty((len(docs), part.shape[1]), dtype=np.float32)
            vectors[rows] = part
            bar.update(len(rows))
        bar.close()
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


def demo_documents(corpus: Path, subset: int | None) -> list[Document]:
    """The documents of `corpus`, or `subset` of them in corpus order: first every abstract judged for a
    query of the test split (qrels/test.tsv beside the corpus, when there is one), then the corpus's first
    other abstracts."""
    from gemma_embed.eval.tasks.retrieval import load_beir
    from gemma_embed.search.corpus import read_documents

    docs = read_documents(corpus)
    if subset is None or subset >= len(docs):
        return docs
    judged: set[str] = set()
    if (corpus.parent / "qrels" / "test.tsv").is_file():
        judged = {doc for relevant in load_beir(corpus.parent, "test").qrels.values() for doc in relevant}
    judged_first = [doc for doc in docs if doc.id in judged] + [doc for doc in docs if doc.id not in judged]
    chosen = {doc.id for doc in judged_first[:subset]}
    return [doc for doc in docs if doc.id in chosen]
