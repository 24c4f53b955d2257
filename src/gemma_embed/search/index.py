"""A vector index over document embeddings: usearch HNSW (float32, int8 or binary vectors) with float
rescoring, or exact numpy search for small corpora, versioned with the model that built it.

Layout of an index folder (written atomically as a whole):

* `index.json`: format, model (as given), model identity (`gemma_embed.eval.encoders.model_identity`),
  dim, precision, document count, whether an ANN graph exists;
* `vectors.npy`: float32 unit vectors [n, dim] (exact search and rescoring of ANN candidates);
* `ann.usearch`: the HNSW graph (only for corpora of at least `exact_below` documents);
* `docs.parquet`: id, title, text of each document, in vector order.

Searching embeds the query with the index's model; a different model (identity) is refused with
`ModelMismatchError`. Ties are ordered as the evaluation harness orders them (document id, descending),
so an exact search ranks exactly as `gemma_embed.eval.tasks.retrieval.rank`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gemma_embed.errors import CheckpointError, DataError, InputError
from gemma_embed.eval.embedding import truncate
from gemma_embed.eval.encoders import Encoder, load_encoder
from gemma_embed.eval.tasks.base import normalize, top_k
from gemma_embed.io.files import atomic_directory, write_json
from gemma_embed.io.tables import read_json
from gemma_embed.search.corpus import Document, documents_from_table, query_prompt
from gemma_embed.search.vectors import check_precision, quantize

INDEX_FORMAT = "gemma-embed-index/1"
META = "index.json"
EXACT_BELOW = 10_000  # corpora smaller than this are searched exactly (no HNSW graph is built)
OVERSAMPLE = {"float32": 2, "int8": 4, "binary": 10}  # ANN candidates per result, rescored in float32


class ModelMismatchError(CheckpointError):
    """An index is searched with a model (or dim) other than the one that built it."""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    rank: int
    score: float
    id: str
    title: str
    text: str

    @property
    def label(self) -> str:
        """A one-line name for the document: its title, else the start of its text, else its id."""
        name = self.title or " ".join(self.text.split())[:100] or self.id
        return name


def _tie_order(ids: Sequence[str]) -> np.ndarray:
    """Rank of each id in sorted order: among equal scores the larger id comes first (trec_eval)."""
    order = np.empty(len(ids), dtype=np.int64)
    order[np.argsort(np.array(ids, dtype=object), kind="stable")] = np.arange(len(ids))
    return order


class VectorIndex:
    """Documents, their float32 vectors and an optional usearch graph; see the module docstring."""

    def __init__(
        self, meta: dict[str, Any], docs: list[Document], vectors: np.ndarray, ann: Any = None
    ) -> None:
        self.meta = meta
        self.docs = docs
        self.vectors = vectors
        self.ann = ann
        self.tie_order = _tie_order([d.id for d in docs])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def precision(self) -> str:
        return str(self.meta["precision"])

    def __len__(self) -> int:
        return len(self.docs)

    # -- search ----------------------------------------------------------------------------------------

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, *, exact: bool | None = None, oversample: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (indices [nq, k], float32 cosine scores [nq, k]) for unit query vectors [nq, dim].

        exact: True for brute force, False for the ANN graph (rescored in float32), None: ANN when built.
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise InputError(f"query vectors have dim {queries.shape[1]}, the index has dim {self.dim}")
        if not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        if exact is False and self.ann is None:
            raise InputError("this index has no ANN graph (built below --exact-below); search it exactly")
        queries = normalize(queries)
        if exact or self.ann is None:
            return top_k(queries, self.vectors, k, self.tie_order)
        return self._ann_search(queries, min(k, len(self)), oversample or OVERSAMPLE[self.precision])

    def _ann_search(self, queries: np.ndarray, k: int, oversample: int) -> tuple[np.ndarray, np.ndarray]:
        count = min(len(self), max(k * oversample, k))
        found = self.ann.search(_ann_vectors(queries, self.precision), count)
        keys = np.atleast_2d(found.keys)  # one query gives `Matches` (1-D keys), several `BatchMatches`
        counts = np.atleast_1d(getattr(found, "counts", len(found.keys)))
        out_idx = np.empty((len(queries), k), dtype=np.int64)
        out_scores = np.empty((len(queries), k), dtype=np.float32)
        for i, query in enumerate(queries):
            candidates = keys[i, : counts[i]].astype(np.int64)
            ties = np.argsort(np.argsort(self.tie_order[candidates], kind="stable"), kind="stable")
            idx, scores = top_k(query[None], self.vectors[candidates], k, ties)
            width = idx.shape[1]
            out_idx[i, :width], out_scores[i, :width] = candidates[idx[0]], scores[0]
            if width < k:  # the graph returned fewer candidates than k (tiny corpora): pad with exact results
                exact_idx, exact_scores = top_k(query[None], self.vectors, k, self.tie_order)
                out_idx[i], out_scores[i] = exact_idx[0], exact_scores[0]
        return out_idx, out_scores

    def check_encoder(self, encoder: Encoder) -> None:
        """Refuse a model other than the index's (by identity) with a one-line ModelMismatchError."""
        if encoder.identity != self.meta["model_identity"]:
            raise ModelMismatchError(
                f"index was built with model {self.meta['model']!r} (identity {self.meta['model_identity'][:12]}), "
                f"not {encoder.name!r} (identity {encoder.identity[:12]}); search with the index's model "
                "or rebuild the index with `gemma-embed index build ... --model`"
            )

    def embed_queries(self, encoder: Encoder, queries: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit query vectors [n, dim] (retrieval query prompt), after checking the model."""
        self.check_encoder(encoder)
        vectors = encoder.encode(list(queries), prompt=query_prompt(encoder), batch_size=batch_size)
        return truncate(np.asarray(vectors, dtype=np.float32), self.dim)

    def search(
        self, encoder: Encoder, queries: Sequence[str], k: int = 10, *, exact: bool | None = None
    ) -> list[list[Hit]]:
        """Ranked hits for each query text."""
        idx, scores = self.search_vectors(self.embed_queries(encoder, queries), k, exact=exact)
        return [
            [
                Hit(rank, float(score), self.docs[i].id, self.docs[i].title, self.docs[i].text)
                for rank, (i, score) in enumerate(zip(row, row_scores, strict=True), start=1)
            ]
            for row, row_scores in zip(idx, scores, strict=True)
        ]

    # -- files -----------------------------------------------------------------------------------------

    def save(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Write the index folder atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_directory(path, overwrite=overwrite, error=DataError) as tmp:
            write_json(tmp / META, self.meta)
            np.save(tmp / "vectors.npy", self.vectors, allow_pickle=False)
            docs = pa.table({c: [getattr(d, c) for d in self.docs] for c in ("id", "title", "text")})
            pq.write_table(docs, tmp / "docs.parquet")
            if self.ann is not None:
                self.ann.save(str(tmp / "ann.usearch"))
        return Path(path)


def _ann_vectors(vectors: np.ndarray, precision: str) -> np.ndarray:
    """What the usearch graph stores: float32 (usearch converts to int8 itself) or packed sign bits."""
    return quantize(vectors, "binary") if precision == "binary" else np.ascontiguousarray(vectors)


def _new_ann(dim: int, precision: str) -> Any:
    from usearch.index import Index

    if precision == "binary":
        return Index(ndim=dim, metric="hamming", dtype="b1")
    return Index(ndim=dim, metric="cos", dtype="f32" if precision == "float32" else "i8")


def build_index(
    docs: Sequence[Document],
    vectors: np.ndarray,
    *,
    model: str,
    model_identity: str,
    precision: str = "float32",
    exact_below: int = EXACT_BELOW,
) -> VectorIndex:
    """An index over documents and their vectors [n, dim]; an HNSW graph when n >= exact_below."""
    check_precision(precision)
    if len(docs) == 0:
        raise DataError("cannot build an index over an empty corpus")
    vectors = normalize(np.asarray(vectors, dtype=np.float32))
    if len(docs) != len(vectors):
        raise DataError(f"{len(docs)} documents but {len(vectors)} vectors")
    meta = {
        "format": INDEX_FORMAT,
        "model": model,
        "model_identity": model_identity,
        "dim": int(vectors.shape[1]),
        "precision": precision,
        "count": len(docs),
        "ann": len(docs) >= exact_below,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    ann = None
    if meta["ann"]:
        ann = _new_ann(meta["dim"], precision)
        ann.add(np.arange(len(docs), dtype=np.uint64), _ann_vectors(vectors, precision))
    return VectorIndex(meta, list(docs), vectors, ann)


def open_index(path: str | Path) -> VectorIndex:
    """Read an index folder written by `VectorIndex.save`."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not (path / META).is_file():
        raise DataError(
            f"{path}: not a gemma-embed index (no {META}); build one with `gemma-embed index build`"
        )
    meta = read_json(path / META)
    if meta.get("format") != INDEX_FORMAT:
        raise DataError(f"{path}: index format {meta.get('format')!r} is not {INDEX_FORMAT!r}; rebuild it")
    table = pq.read_table(path / "docs.parquet")
    docs = documents_from_table(table)
    vectors = np.load(path / "vectors.npy", mmap_mode="r", allow_pickle=False)
    ann = None
    if meta["ann"]:
        from usearch.index import Index

        ann = Index.restore(str(path / "ann.usearch"))
    return VectorIndex(meta, docs, np.asarray(vectors), ann)


def load_index_encoder(index: VectorIndex, model: str | None = None, dtype: str | None = None) -> Encoder:
    """The encoder to search `index` with (default: the model it was built with), checked against it."""
    encoder = load_encoder(model or index.meta["model"], dtype=dtype)
    index.check_encoder(encoder)
    return encoder
