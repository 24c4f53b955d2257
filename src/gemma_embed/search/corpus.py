"""Reading a document corpus and embedding it into Parquet shards, locally or on Ray Data.

Input: a table file (`.jsonl`, `.json`, `.csv`, `.tsv`, `.parquet`, read by `gemma_embed.train.data.pairs`) with
an id, a text and an optional title column, or a folder of `.txt` / `.md` files (id: the relative path).
A document is embedded with the model's retrieval "document" prompt as MTEB embeds it: "title text" when
it has a title (`gemma_embed.eval.tasks.retrieval.document_text`).

Output: a folder with `manifest.json` (model identity, dim, precision, shard size, a digest of the corpus)
and `shard-00000.parquet`, ... (columns id, title, text, embedding), each written atomically. A re-run with
the same job skips finished shards; a folder holding another job's shards is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from gemma_embed.errors import ConfigError, DataError
from gemma_embed.eval.embedding import truncate
from gemma_embed.eval.encoders import Encoder, load_encoder, resolve_prompt_name
from gemma_embed.eval.tasks.retrieval import document_text
from gemma_embed.io.files import atomic_write, write_json
from gemma_embed.io.tables import location, read_json, read_records, read_text
from gemma_embed.search.vectors import check_precision, dequantize, quantize

MANIFEST = "manifest.json"
CORPUS_FORMAT = "gemma-embed-corpus/1"
TEXT_SUFFIXES = (".txt", ".md")
ID_FIELDS = ("id", "_id")  # tried in this order when no --id-field is given (BEIR uses "_id")


@dataclass(frozen=True, slots=True)
class Document:
    """One document: its id, optional title ("" when none) and text."""

    id: str
    title: str
    text: str

    @property
    def embedded_text(self) -> str:
        """What the model embeds (after the document prompt): "title text", or the text alone."""
        return document_text(self.title, self.text)


@dataclass(frozen=True)
class Fields:
    """Column names of a table corpus (id None: "id", else "_id")."""

    id: str | None = None
    text: str = "text"
    title: str | None = "title"


def read_documents(source: str | Path, fields: Fields = Fields()) -> list[Document]:
    """Every document of a table file or a folder of .txt/.md files. Raises DataError for a missing file
    or column, a non-string text, a duplicate id or an empty corpus."""
    path = Path(source).expanduser()
    if path.is_dir():
        docs = list(_folder_documents(path))
    elif path.is_file():
        docs = list(_table_documents(path, fields))
    else:
        raise DataError(f"{path}: no such file or directory")
    if not docs:
        raise DataError(f"{path}: the corpus is empty (no documents to embed)")
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise DataError(f"{path}: duplicate document id {doc.id!r}")
        seen.add(doc.id)
    return docs


def _folder_documents(folder: Path) -> Iterator[Document]:
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        yield Document(id=file.relative_to(folder).as_posix(), title="", text=read_text(file))


def _table_documents(path: Path, fields: Fields) -> Iterator[Document]:
    id_field = fields.id
    for number, record in read_records(path):
        where = location(path, number)
        if id_field is None:
            id_field = next((name for name in ID_FIELDS if name in record), None)
        missing = [name for name in (id_field, fields.text) if name is None or name not in record]
        if missing:
            wanted = " or ".join(map(repr, ID_FIELDS)) if id_field is None else repr(missing[0])
            raise DataError(
                f"{where}: missing column {wanted} (found: {', '.join(sorted(record)) or 'none'}); "
                "pick the columns with --id-field/--text-field/--title-field"
            )
        text = record[fields.text]
        title = record.get(fields.title) if fields.title else None
        if not isinstance(text, str):
            raise DataError(f"{where}: column {fields.text!r} must be a string, got {type(text).__name__}")
        if title is not None and not isinstance(title, str):
            raise DataError(f"{where}: column {fields.title!r} must be a string, got {type(title).__name__}")
        yield Document(id=str(record[id_field]), title=title or "", text=text)


def corpus_digest(docs: Sequence[Document]) -> str:
    """sha256 of every document's id, title and text, in order (which corpus a shard folder belongs to)."""
    digest = hashlib.sha256()
    for doc in docs:
        for part in (doc.id, doc.title, doc.text):
            digest.update(part.encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
    return digest.hexdigest()


def document_prompt(encoder: Encoder) -> str:
    """The prompt string documents are embedded with (retrieval "document" side; "" if the model has none)."""
    name = resolve_prompt_name(encoder.prompts, "Retrieval", "document")
    return encoder.prompts[name] if name is not None else ""


def query_prompt(encoder: Encoder) -> str:
    """The prompt string queries are embedded with (retrieval "query" side; "" if the model has none)."""
    name = resolve_prompt_name(encoder.prompts, "Retrieval", "query")
    return encoder.prompts[name] if name is not None else ""


def embed_documents(
    encoder: Encoder, docs: Sequence[Document], dim: int | None, batch_size: int = 32
) -> np.ndarray:
    """float32 unit vectors [len(docs), dim] of documents (document prompt, Matryoshka truncation)."""
    texts = [doc.embedded_text for doc in docs]
    vectors = encoder.encode(texts, prompt=document_prompt(encoder), batch_size=batch_size)
    return truncate(np.asarray(vectors, dtype=np.float32), dim)


# ---- shards ---------------------------------------------------------------------------------------------


def shard_path(folder: Path, number: int) -> Path:
    return folder / f"shard-{number:05d}.parquet"


def write_shard(path: Path, docs: Sequence[Document], stored: np.ndarray) -> None:
    """One Parquet shard (id, title, text, embedding as a fixed-size list), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.ascontiguousarray(stored).reshape(-1))
    table = pa.table(
        {
            "id": pa.array([d.id for d in docs], pa.string()),
            "title": pa.array([d.title for d in docs], pa.string()),
            "text": pa.array([d.text for d in docs], pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, stored.shape[1]),
        }
    )
    with atomic_write(path, "wb") as handle:
        pq.write_table(table, handle)


def documents_from_table(table: Any) -> list[Document]:
    """Documents from a pyarrow table with id, title and text columns (a shard or an index's docs)."""
    columns = [table[name].to_pylist() for name in ("id", "title", "text")]
    return [Document(*row) for row in zip(*columns, strict=True)]


@dataclass
class CorpusEmbeddings:
    """A finished embed-corpus folder read back: documents, float32 unit vectors and the manifest."""

    docs: list[Document]
    vectors: np.ndarray
    manifest: dict[str, Any]


def is_embeddings_folder(path: Path) -> bool:
    """True when `path` is an embed-corpus output folder (it has a manifest of that format)."""
    manifest = path / MANIFEST
    return manifest.is_file() and read_json(manifest).get("format") == CORPUS_FORMAT


def read_embeddings(folder: str | Path) -> CorpusEmbeddings:
    """The documents and vectors of a finished embed-corpus folder (int8/binary are dequantized)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    if not is_embeddings_folder(folder):
        raise DataError(f"{folder}: not an embed-corpus output folder (no {MANIFEST})")
    manifest = read_json(folder / MANIFEST)
    docs: list[Document] = []
    parts: list[np.ndarray] = []
    for number in range(manifest["shards"]):
        path = shard_path(folder, number)
        if not path.is_file():
            raise DataError(f"{path}: shard missing; finish the job by re-running embed-corpus")
        table = pq.read_table(path)
        docs += documents_from_table(table)
        column = table["embedding"].combine_chunks()
        width = column.type.list_size
        parts.append(column.values.to_numpy(zero_copy_only=False).reshape(-1, width))
    vectors = dequantize(np.concatenate(parts), manifest["precision"], manifest["dim"])
    return CorpusEmbeddings(docs, vectors, manifest)


# ---- the job --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedJob:
    """What an embed-corpus run produces; two runs with equal jobs write identical shards."""

    model: str
    dim: int | None = None
    precision: str = "float32"
    shard_size: int = 10_000
    batch_size: int = 32
    dtype: str | None = None


def _manifest(job: EmbedJob, encoder: Encoder, docs: Sequence[Document], dim: int) -> dict[str, Any]:
    return {
        "format": CORPUS_FORMAT,
        "model": job.model,
        "model_identity": encoder.identity,
        "dim": dim,
        "precision": job.precision,
        "shard_size": job.shard_size,
        "count": len(docs),
        "shards": -(-len(docs) // job.shard_size),
        "corpus_sha256": corpus_digest(docs),
        "prompt": document_prompt(encoder),
    }


def _check_resumable(output: Path, manifest: dict[str, Any]) -> None:
    path = output / MANIFEST
    if path.is_file():
        old = read_json(path)
        changed = [key for key in manifest if old.get(key) != manifest[key]]
        if changed:
            raise DataError(
                f"{output} holds embeddings of another job ({', '.join(changed)} differ); "
                "choose another OUTPUT or delete it"
            )
    elif output.is_dir() and any(output.iterdir()):
        raise DataError(
            f"{output} exists, is not empty and is not an embed-corpus folder; choose another OUTPUT"
        )


def embed_corpus(
    source: str | Path,
    output: str | Path,
    job: EmbedJob,
    *,
    fields: Fields = Fields(),
    ray: bool = False,
    ray_address: str | None = None,
    ray_actors: int = 1,
    progress: bool = True,
    encoder: Encoder | None = None,
) -> dict[str, Any]:
    """Embed every document of `source` into Parquet shards under `output`; returns the manifest.

    Finished shards (from an interrupted run of the same job) are skipped. With `ray`, the pending
    documents are embedded by Ray Data (`map_batches` on an actor pool, each actor holding the model).
    """
    check_precision(job.precision)
    if job.shard_size < 1:
        raise ConfigError(f"shard size must be a positive integer, got {job.shard_size}")
    docs = read_documents(source, fields)
    output = Path(output)
    encoder = encoder or load_encoder(job.model, dtype=job.dtype)
    dim = _full_dim(encoder) if job.dim is None else job.dim
    manifest = _manifest(job, encoder, docs, dim)
    _check_resumable(output, manifest)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / MANIFEST, manifest)
    pending = [n for n in range(manifest["shards"]) if not shard_path(output, n).is_file()]
    shards = [(n, docs[n * job.shard_size : (n + 1) * job.shard_size]) for n in pending]
    if ray and shards:
        bar = tqdm(total=len(shards), desc="embed-corpus (ray)", unit="shard", disable=not progress)
        for number, part, vectors in _embed_on_ray(shards, job, dim, ray_address, ray_actors):
            write_shard(shard_path(output, number), part, quantize(vectors, job.precision))
            bar.update()
        bar.close()
    else:
        for number, part in tqdm(shards, desc="embed-corpus", unit="shard", disable=not progress):
            vectors = embed_documents(encoder, part, dim, job.batch_size)
            write_shard(shard_path(output, number), part, quantize(vectors, job.precision))
    return manifest


def _full_dim(encoder: Encoder) -> int:
    return int(np.asarray(encoder.encode(["dimension probe"], prompt="", batch_size=1)).shape[1])


class RayEmbedder:
    """A Ray Data actor: loads the model once, embeds batches of {"row", "text"} into "embedding"."""

    def __init__(self, model: str, dim: int, batch_size: int, dtype: str | None) -> None:
        self.encoder = load_encoder(model, dtype=dtype)
        self.prompt = document_prompt(self.encoder)
        self.dim = dim
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode(
            [str(t) for t in batch["text"]], prompt=self.prompt, batch_size=self.batch_size
        )
        return {"row": batch["row"], "embedding": truncate(np.asarray(vectors, np.float32), self.dim)}


def _embed_on_ray(
    shards: Sequence[tuple[int, Sequence[Document]]],
    job: EmbedJob,
    dim: int,
    address: str | None,
    actors: int,
) -> Iterator[tuple[int, Sequence[Document], np.ndarray]]:
    """(shard number, documents, float32 vectors) for each pending shard, as Ray Data finishes them."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("--ray needs Ray Data (pip install 'ray[data]')") from None
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    rows = [
        {"row": row, "text": doc.embedded_text}
        for number, part in shards
        for row, doc in enumerate(part, start=number * job.shard_size)
    ]
    dataset = ray.data.from_items(rows).map_batches(
        RayEmbedder,
        fn_constructor_kwargs={
            "model": job.model,
            "dim": dim,
            "batch_size": job.batch_size,
            "dtype": job.dtype,
        },
        batch_size=max(job.batch_size, min(job.shard_size, 1024)),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    # Shards are written as soon as all their rows are back, so an interrupted Ray run resumes by shard too.
    size = job.shard_size
    parts = dict(shards)
    received: dict[int, dict[int, np.ndarray]] = {number: {} for number in parts}
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        for row, vector in zip(batch["row"], batch["embedding"], strict=True):
            number = int(row) // size
            received[number][int(row) % size] = vector
            if len(received[number]) == len(parts[number]):
                done = received.pop(number)
                yield number, parts[number], np.stack([done[i] for i in range(len(done))])
