"""The public encoding API: `load(...)` returns an `Embedder` whose `encode` gives L2-normalized vectors."""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from gemma_embed.errors import CheckpointError, InputError
from gemma_embed.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from gemma_embed.model.config import GemmaEmbedConfig
from gemma_embed.model.head import truncate_and_normalize
from gemma_embed.prompts import apply_prompt, resolve_prompt
from gemma_embed.quant.embeddings import check_precision, quantize_embeddings

LongText = Literal["truncate", "chunk"]
# Padded tokens per forward pass. Measured on the 300m config, 2 cores: bf16 throughput is flat from 1k to 4k
# tokens per pass and falls past 8k; on the benchmark's text mix, batches of 32 sorted texts are 55% padding,
# batches capped at 2048 padded tokens 6%.
MAX_BATCH_TOKENS = 2048
BUILTIN_MODELS_DIR = Path(__file__).parent / "models"
# glibc's malloc raises its mmap threshold to the largest block freed (up to 32 MiB), so after the first pass
# activations come from the heap, whose freed middle is kept, not returned: on the 300m int4 config that
# held 26 and 115 MiB more at peak over 64 texts of the benchmark's mix in two runs (bench/int4_memory.py;
# docs/benchmarks.md, "Where int4 memory goes"). A fixed threshold (which
# also stops the adjustment) keeps each block above it in its own map, returned to the system when freed,
# at a cost in speed (each such block is mapped and zeroed afresh), so it is opt-in: `return_freed_memory`.
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
DEFAULT_MODEL = "default"


def _hf_cache_snapshot(name: str) -> Path | None:
    """A model already in the local Hugging Face cache (nothing is downloaded)."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    repo = Path(hub) / ("models--" + name.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def resolve_model_path(path_or_name: str | Path) -> Path:
    """A checkpoint directory from a path, a built-in name, or a Hugging Face id already in the local cache."""
    path = Path(path_or_name).expanduser()
    if path.exists():
        return path
    name = str(path_or_name)
    builtin = BUILTIN_MODELS_DIR / name
    if name == DEFAULT_MODEL:
        shipped = sorted(p.name for p in BUILTIN_MODELS_DIR.glob("*") if (p / "config.json").is_file())
        if not shipped:
            raise CheckpointError(
                "no default model is shipped in this version; pass a checkpoint directory "
                "(e.g. a downloaded google/embeddinggemma-300m) as --model / load(PATH)"
            )
        builtin = BUILTIN_MODELS_DIR / shipped[0]
    if (builtin / "config.json").is_file():
        return builtin
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise CheckpointError(f"model directory {name!r} not found")
    if (snapshot := _hf_cache_snapshot(name)) is not None:
        return snapshot
    raise CheckpointError(
        f"model {name!r} not found: it is not a directory, a built-in model or in the local Hugging Face cache; "
        f"download it first (e.g. `huggingface-cli download {name} --local-dir DIR`) and pass DIR"
    )


def _as_texts(texts: Any) -> tuple[list[str], bool]:
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Sequence | np.ndarray):
        raise InputError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    items = list(texts)
    if not items:
        raise InputError("texts is empty; pass at least one string")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputError(f"texts[{i}] is {type(item).__name__}, not str; every item must be a string")
    return items, False


class Embedder:
    """EmbeddingGemma-style text embedder: tokenization, prompts, batching and Matryoshka truncation."""

    def __init__(self, checkpoint: Checkpoint, name_or_path: str | None = None) -> None:
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.tokenizer = checkpoint.tokenizer
        self.prompts = checkpoint.prompts
        self.default_prompt_name = checkpoint.default_prompt_name
        self.name_or_path = name_or_path or str(checkpoint.source or "")
        self.chunk_overlap = 64  # tokens shared by neighbouring windows with long_text="chunk"

    @property
    def config(self) -> GemmaEmbedConfig:
        return self.model.config

    @property
    def embedding_dim(self) -> int:
        return self.model.config.embedding_dim

    @property
    def dims(self) -> tuple[int, ...]:
        """Matryoshka dims the model was trained for (any dim up to embedding_dim is accepted)."""
        return self.model.config.matryoshka_dims

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def dtype_reason(self) -> str:
        """Why the model computes in `dtype` (e.g. this CPU computes bfloat16 slowly), as `load` chose it."""
        return self.checkpoint.dtype_reason

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check_dim(self, dim: int | None) -> int | None:
        if dim is None:
            return None
        if (
            isinstance(dim, bool)
            or not isinstance(dim, int | np.integer)
            or not 1 <= dim <= self.embedding_dim
        ):
            raise InputError(
                f"dim={dim!r} is not allowed; use an integer from 1 to {self.embedding_dim} "
                f"(trained Matryoshka dims: {', '.join(map(str, self.dims))})"
            )
        return int(dim)

    def model_inputs(self, texts: Any, task: str | None = None, prompt: str | None = None) -> list[str]:
        """The exact strings the model sees: prompt + text, stripped."""
        items, _ = _as_texts(texts)
        prefix = resolve_prompt(self.prompts, task, prompt, self.default_prompt_name)
        return [apply_prompt(prefix, t) for t in items]

    def count_tokens(self, texts: Any, task: str | None = None, prompt: str | None = None) -> list[int]:
        """Tokens per text as the model sees it (specials included, before truncation)."""
        return [len(ids) + 2 for ids in self.tokenizer.text_ids(self.model_inputs(texts, task, prompt))]

    def encode(
        self,
        texts: str | Sequence[str],
        task: str | None = None,
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
        long_text: LongText = "truncate",
        precision: str = "float32",
        ranges: np.ndarray | None = None,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
    ) -> np.ndarray:
        """Embed texts as float32 L2-normalized vectors [n, dim] (one vector [dim] for a single string).

        task: a prompt name (see `prompts`, e.g. "query", "document", "STS"); prompt: a literal prompt
        string instead; neither: the checkpoint's default prompt (none for EmbeddingGemma). dim: Matryoshka
        truncation (re-normalized). long_text: "truncate" to max_seq_length tokens (warns with a count) or
        "chunk" to embed overlapping windows and average them. precision: "float32", or "int8"/"uint8"
        (per-dimension `ranges` [2, dim], else calibrated on these texts) / "binary"/"ubinary" (packed
        sign bits), as `gemma_embed.quant.embeddings.quantize_embeddings` does after normalization.
        Texts are sorted by length and a forward pass takes at most `batch_size` texts and
        `max_batch_tokens` padded tokens (one long text always fits), so padding costs little.
        """
        check_precision(precision)
        items, single = _as_texts(texts)
        dim = self.check_dim(dim)
        if long_text not in ("truncate", "chunk"):
            raise InputError(f"long_text={long_text!r}; use 'truncate' or 'chunk'")
        check_batching(batch_size, max_batch_tokens)
        prefix = resolve_prompt(self.prompts, task, prompt, self.default_prompt_name)
        if long_text == "chunk":
            inputs, owners = self._chunk(prefix, items)
        else:
            inputs, owners = [apply_prompt(prefix, t) for t in items], list(range(len(items)))
        ids, cut = self.tokenizer.encode(inputs)
        if cut and long_text == "truncate":
            warnings.warn(
                f"{cut} of {len(items)} texts exceed max_seq_length={self.tokenizer.max_length} tokens and were "
                "truncated; pass long_text='chunk' to embed them whole",
                stacklevel=2,
            )
        vectors = self._embed_ids(ids, length_batches(ids, batch_size, max_batch_tokens), show_progress)
        if long_text == "chunk":
            pooled = torch.zeros(len(items), vectors.shape[1])
            pooled.index_add_(0, torch.tensor(owners), vectors)
            vectors = pooled
        out = quantize_embeddings(truncate_and_normalize(vectors, dim).numpy(), precision, ranges)
        return out[0] if single else out

    def _chunk(self, prefix: str, items: list[str]) -> tuple[list[str], list[int]]:
        prompt_tokens = len(self.tokenizer.text_ids([prefix.strip()])[0]) if prefix.strip() else 0
        window = max(1, self.tokenizer.max_length - 2 - prompt_tokens)
        inputs, owners = [], []
        for owner, text in enumerate(items):
            for start, end in self.tokenizer.split_spans(text, window, min(self.chunk_overlap, window // 2)):
                inputs.append(apply_prompt(prefix, text[start:end]))
                owners.append(owner)
        return inputs, owners

    @torch.inference_mode()
    def _embed_ids(
        self, ids: list[list[int]], batches: list[list[int]], show_progress: bool | None
    ) -> torch.Tensor:
        if show_progress is None:
            show_progress = len(batches) > 4 and sys.stderr.isatty()
        out = torch.empty(len(ids), self.embedding_dim)
        device = self.device
        for batch in tqdm(batches, desc="encode", unit="batch", disable=not show_progress):
            padded = self.tokenizer.pad([ids[i] for i in batch])
            vectors = self.model(padded.input_ids.to(device), padded.attention_mask.to(device))
            out[torch.tensor(batch)] = vectors.float().cpu()
        return out

    def encode_query(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """`encode` with the search-query prompt (`task: search result | query: `)."""
        return self.encode(texts, task="query", **kwargs)

    def encode_document(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray:
        """`encode` with the document prompt (`title: none | text: `)."""
        return self.encode(texts, task="document", **kwargs)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix [len(a), len(b)] (a single vector on either side is allowed)."""
        a2, b2 = np.atleast_2d(np.asarray(a, np.float32)), np.atleast_2d(np.asarray(b, np.float32))
        if a2.shape[1] != b2.shape[1]:
            raise InputError(f"cannot compare vectors of dim {a2.shape[1]} and {b2.shape[1]}")
        a2 = a2 / np.maximum(np.linalg.norm(a2, axis=1, keepdims=True), 1e-12)
        b2 = b2 / np.maximum(np.linalg.norm(b2, axis=1, keepdims=True), 1e-12)
        return a2 @ b2.T

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a checkpoint that `load` and sentence-transformers both read."""
        return save_checkpoint(self.checkpoint, path, overwrite=overwrite)


def check_batching(batch_size: int, max_batch_tokens: int) -> None:
    """InputError unless both bounds of `length_batches` are positive integers (checked before any work)."""
    for name, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def length_batches(ids: Sequence[Sequence[int]], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices of `ids` in forward-pass batches: longest first (memory errors surface early), each batch at
    most `batch_size` sequences and `max_batch_tokens` padded tokens (a longer sequence goes alone)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if (
            batch is None
            or len(batch) == batch_size
            or (len(batch) + 1) * len(ids[batch[0]]) > max_batch_tokens
        ):
            batches.append([i])
        else:
            batch.append(i)
    return batches


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD (see there), unless MALLOC_MMAP_THRESHOLD_ sets it;
    whether it was set (False off glibc). Process-wide and opt-in (the lowest-memory way to run an int4
    model, with GEMMA_EMBED_FUSED=0); single queries measured slower with it."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def load(
    path_or_name: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu", dtype: Any = None
) -> Embedder:
    """Load an embedder from a checkpoint directory, a built-in name ("default") or a locally cached HF id.

    dtype: None (float32 weights compute in float32; bfloat16 and quantized weights in bfloat16 on CUDA and on
    CPUs that compute it fast (AMX, or a cached one-off probe), else in float32; see `gemma_embed.dtypes`;
    `Embedder.dtype_reason` says which applied), "float32" or "bfloat16".
    float16 is refused (EmbeddingGemma's activations overflow it).
    """
    path = resolve_model_path(path_or_name)
    return Embedder(load_checkpoint(path, dtype=dtype, device=device), name_or_path=str(path_or_name))
