"""On-disk embedding cache: re-runs of an evaluation read their vectors instead of encoding again.

Layout: `<root>/<ns[:2]>/<ns>/<shard>.keys.npy` + `<shard>.emb.npy`, where the namespace `ns` is a digest of
the model identity and the prompt string, a shard's keys are the sha256 digests of its texts (uint8 [n, 32])
and its embeddings the full-dimension vectors [n, dim], float32 or float16 (a store's choice: float16 halves
a large teacher cache), always read back as float32 (any Matryoshka dim is derived from them).
Files are plain `.npy` read with `allow_pickle=False` and written atomically (temporary file + rename);
the keys file is written last, so a shard is visible only once complete. Unreadable shards are skipped
with a warning, never trusted. Several processes may share a cache: each writes its own shards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

import numpy as np

from gemma_embed.eval.io import write_atomic

logger = logging.getLogger(__name__)
CACHE_ENV = "GEMMA_EMBED_CACHE"
KEY_BYTES = 32


def default_cache_dir() -> Path:
    """`$GEMMA_EMBED_CACHE` if set, else `~/.cache/gemma-embed/embeddings`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gemma-embed" / "embeddings"


def text_keys(texts: list[str]) -> np.ndarray:
    """sha256 digests of the texts as uint8 [n, 32]."""
    digests = b"".join(hashlib.sha256(t.encode("utf-8")).digest() for t in texts)
    return np.frombuffer(digests, dtype=np.uint8).reshape(len(texts), KEY_BYTES)


def namespace(model_identity: str, prompt: str) -> str:
    """The cache namespace of one model and one prompt string."""
    return hashlib.sha256(f"{model_identity}\0{prompt}".encode()).hexdigest()


class EmbeddingCache:
    """Full-dimension embeddings by (model identity, prompt, text)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def _dir(self, ns: str) -> Path:
        return self.root / ns[:2] / ns

    def lookup(self, ns: str, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(found: bool [n], vectors [found.sum(), dim] in the order of the found keys, or None if none)."""
        found = np.zeros(len(keys), dtype=bool)
        directory = self._dir(ns)
        if not directory.is_dir():
            return found, None
        wanted = {key.tobytes(): i for i, key in enumerate(keys)}
        parts: list[tuple[np.ndarray, np.ndarray]] = []  # (positions in keys, their vectors)
        for keys_file in sorted(directory.glob("*.keys.npy")):
            shard = self._read_shard(keys_file)
            if shard is None:
                continue
            shard_keys, vectors = shard
            if parts and vectors.shape[1] != parts[0][1].shape[1]:
                logger.warning("embedding cache: %s has another dim; ignored", keys_file)
                continue
            positions, rows = [], []
            for row, key in enumerate(shard_keys):
                i = wanted.get(key.tobytes())
                if i is not None and not found[i]:
                    found[i] = True
                    positions.append(i)
                    rows.append(row)
            if rows:
                parts.append((np.asarray(positions), np.asarray(vectors[np.asarray(rows)], dtype=np.float32)))
        if not parts:
            return found, None
        out = np.empty((len(keys), parts[0][1].shape[1]), dtype=np.float32)
        for positions, vectors in parts:
            out[positions] = vectors
        return found, out[found]

    @staticmethod
    def _read_shard(keys_file: Path) -> tuple[np.ndarray, np.ndarray] | None:
        emb_file = keys_file.with_name(keys_file.name.replace(".keys.npy", ".emb.npy"))
        try:
            keys = np.load(keys_file, allow_pickle=False)
            vectors = np.load(emb_file, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as e:
            logger.warning("embedding cache: unreadable shard %s (%s); ignored", keys_file, e)
            return None
        if (
            keys.dtype != np.uint8
            or keys.ndim != 2
            or keys.shape[1] != KEY_BYTES
            or vectors.dtype not in (np.float32, np.float16)
            or vectors.ndim != 2
            or vectors.shape[0] != keys.shape[0]
        ):
            logger.warning("embedding cache: malformed shard %s; ignored", keys_file)
            return None
        return keys, vectors

    def store(self, ns: str, keys: np.ndarray, vectors: np.ndarray, dtype: type = np.float32) -> None:
        """Write one shard (vectors first, keys last), vectors stored as `dtype` (float32 or float16)."""
        if len(keys) == 0:
            return
        if dtype not in (np.float32, np.float16):
            raise ValueError(f"cache vectors are float32 or float16, not {dtype}")
        directory = self._dir(ns)
        shard = uuid.uuid4().hex
        vectors = np.ascontiguousarray(vectors, dtype=dtype)
        keys = np.ascontiguousarray(keys, dtype=np.uint8)
        write_atomic(directory / f"{shard}.emb.npy", lambda f: np.save(f, vectors, allow_pickle=False))
        write_atomic(directory / f"{shard}.keys.npy", lambda f: np.save(f, keys, allow_pickle=False))
