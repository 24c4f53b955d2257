"""Turning texts into embeddings for the task evaluators: prompts, de-duplication, the disk cache,
progress, and Matryoshka dims.

A task evaluator receives an `EmbedFn`: `embed(texts, role=None) -> float32 [n, dim]`, with the task's
prompt already chosen (`role` is "query"/"document" for the two sides of retrieval). Every text is encoded
once, at the model's full dimension; each requested Matryoshka dim is a truncation of that vector,
re-normalized to unit length (EmbeddingGemma's MRL recipe), so `--dims 768,512,256,128` costs one encoding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from gemma_embed.errors import InputError
from gemma_embed.eval.cache import EmbeddingCache, namespace, text_keys
from gemma_embed.eval.encoders import Encoder, resolve_prompt_name

EmbedFn = Callable[..., np.ndarray]
"""`embed(texts: Sequence[str], role: str | None = None) -> np.ndarray` (float32 [len(texts), dim])."""


def truncate(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """The first `dim` components re-normalized to unit L2 norm (Matryoshka truncation); `dim=None` or the
    full dimension returns the vectors unchanged (as the model gives them)."""
    full = vectors.shape[1]
    if dim is None or dim == full:
        return vectors
    if not 1 <= dim <= full:
        raise InputError(f"dim {dim} is not available: the model's embeddings have {full} dimensions")
    head = vectors[:, :dim]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return (head / np.maximum(norms, 1e-12)).astype(np.float32)


class EmbeddingSource:
    """Full-dimension embeddings of an `Encoder`, through an optional `EmbeddingCache`.

    Results are also kept in memory per (prompt, text list) until `clear()`, so evaluating one task at
    several dims encodes (or reads) each list once.
    """

    def __init__(
        self,
        encoder: Encoder,
        cache: EmbeddingCache | None = None,
        *,
        batch_size: int = 32,
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size}")
        self.encoder = encoder
        self.cache = cache
        self.batch_size = batch_size
        self.progress = progress
        self.encoded = 0  # unique texts sent to the model, for reporting
        self.from_cache = 0  # unique texts read from the disk cache
        self.full_dim: int | None = None  # the model's embedding size, known after the first encoding
        self._memo: dict[tuple[str, str], np.ndarray] = {}

    def clear(self) -> None:
        """Forget the in-memory results (the disk cache stays)."""
        self._memo.clear()

    def prompt(self, task_type: str, role: str | None = None, task_name: str | None = None) -> str:
        """The prompt string for a task type (and side of a retrieval task); "" if the model has none."""
        name = resolve_prompt_name(self.encoder.prompts, task_type, role, task_name)
        return self.encoder.prompts[name] if name is not None else ""

    def encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        """float32 [len(texts), full_dim] embeddings of `texts` with `prompt`."""
        texts = list(texts)
        if not texts:
            raise InputError("nothing to encode: the text list is empty")
        digest = hashlib.sha256()
        for text in texts:
            digest.update(len(text).to_bytes(8, "little") + text.encode("utf-8"))
        memo_key = (prompt, digest.hexdigest())
        if memo_key not in self._memo:
            self._memo[memo_key] = self._encode_unique(texts, prompt)
        return self._memo[memo_key]

    def _encode_unique(self, texts: list[str], prompt: str) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        keys = text_keys(unique)
        ns = namespace(self.encoder.identity, prompt)
        found, cached = (
            self.cache.lookup(ns, keys) if self.cache is not None else (np.zeros(len(unique), bool), None)
        )
        missing = np.flatnonzero(~found)
        self.from_cache += len(unique) - len(missing)
        table: np.ndarray | None = None  # [len(unique), dim], allocated once the dim is known

        def fill(rows: np.ndarray | list[int], vectors: np.ndarray) -> None:
            nonlocal table
            if table is None:
                table = np.empty((len(unique), vectors.shape[1]), dtype=np.float32)
            table[rows] = vectors

        if cached is not None:
            fill(np.flatnonzero(found), cached)
        if len(missing):
            # Long texts first, in chunks of similar length: less padding, and progress that can be trusted.
            order = sorted(missing.tolist(), key=lambda i: -len(unique[i]))
            chunk = self.batch_size * 16
            with tqdm(total=len(order), desc="encode", unit="text", disable=not self.progress) as bar:
                for start in range(0, len(order), chunk):
                    idx = order[start : start + chunk]
                    vectors = self.encoder.encode(
                        [unique[i] for i in idx], prompt=prompt, batch_size=self.batch_size
                    )
                    if vectors.ndim != 2 or vectors.shape[0] != len(idx):
                        raise InputError(
                            f"encoder returned shape {vectors.shape} for {len(idx)} texts; expected [n, dim]"
                        )
                    if self.cache is not None:
                        self.cache.store(ns, keys[idx], vectors)
                    fill(idx, vectors)
                    self.encoded += len(idx)
                    bar.update(len(idx))
        assert table is not None  # texts is non-empty, so some rows were filled
        self.full_dim = table.shape[1]
        if len(unique) == len(texts):
            return table
        position = {text: i for i, text in enumerate(unique)}
        return table[[position[t] for t in texts]]

    def embed_fn(self, task_type: str, *, task_name: str | None = None, dim: int | None = None) -> EmbedFn:
        """The `EmbedFn` a task evaluator uses: this task's prompts, vectors truncated to `dim`."""

        def embed(texts: Sequence[str], role: str | None = None) -> np.ndarray:
            return truncate(self.encode(texts, self.prompt(task_type, role, task_name)), dim)

        return embed
