"""Models under evaluation, behind one small `Encoder` protocol.

Two backends: gemma-embed checkpoints (through `gemma_embed.load`) and any local sentence-transformers
model directory (through sentence-transformers, imported only when used), so a baseline and a gemma-embed
model are compared by the same harness. An encoder also carries an `identity`: a digest of what it is
(backend, path, the size/mtime of every file and the content of the small ones, the dtype) that keys the
embedding cache, so a changed checkpoint never reuses old vectors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from gemma_embed.errors import CheckpointError, ConfigError

Backend = Literal["auto", "gemma-embed", "sentence-transformers"]
BACKENDS: tuple[str, ...] = ("auto", "gemma-embed", "sentence-transformers")
# Files up to 1 MiB (configs, tokenizer files) are identified by content; larger ones by size and mtime.
_HASHED_FILE_LIMIT = 1 << 20


@runtime_checkable
class Encoder(Protocol):
    """What the harness needs from a model.

    name: a display name. identity: a stable digest of the model (cache key). prompts: prompt name ->
    prompt string (EmbeddingGemma's names: "query", "document", "STS", "Retrieval-document", ...).
    encode: float32 [len(texts), full_dim] embeddings of `prompt + text`.
    """

    @property
    def name(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def prompts(self) -> Mapping[str, str]: ...

    def encode(self, texts: Sequence[str], *, prompt: str, batch_size: int) -> np.ndarray: ...


def resolve_prompt_name(
    prompts: Mapping[str, str], task_type: str, role: str | None = None, task_name: str | None = None
) -> str | None:
    """The prompt name to use, in MTEB's order of priority (mteb `get_prompt_name`):
    "<task name>-<role>", "<task name>", "<task type>-<role>", "<task type>", "<role>".

    role is "query" or "document" for the two sides of a retrieval task, None for symmetric tasks.
    Returns None when the model has none of these prompts (the text is encoded without a prompt).
    """
    names: list[str] = []
    if task_name:
        names += [f"{task_name}-{role}", task_name] if role else [task_name]
    names += [f"{task_type}-{role}", task_type, role] if role else [task_type]
    return next((n for n in names if n in prompts), None)


def model_identity(backend: str, path_or_name: str, **extra: Any) -> str:
    """A sha256 digest naming a model exactly: backend, resolved path, and for a local path every file's
    relative name, size and mtime (plus the content of files up to 1 MiB); `extra` adds e.g. the dtype."""
    path = Path(path_or_name).expanduser()
    description: dict[str, Any] = {"backend": backend, "extra": {k: str(v) for k, v in sorted(extra.items())}}
    if path.exists():
        root = path.resolve()
        description["path"] = str(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        entries = []
        for file in files:
            rel = file.relative_to(root) if file != root else Path(file.name)
            if any(part.startswith(".") for part in rel.parts):
                continue
            stat = file.stat()
            entry = [str(rel), stat.st_size, stat.st_mtime_ns]
            if stat.st_size <= _HASHED_FILE_LIMIT:
                entry.append(hashlib.sha256(file.read_bytes()).hexdigest())
            entries.append(entry)
        description["files"] = entries
    else:
        description["name"] = str(path_or_name)
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


class GemmaEmbedEncoder:
    """A `gemma_embed.Embedder` (float32, L2-normalized output) as an `Encoder`."""

    def __init__(self, embedder: Any, identity: str) -> None:
        self.embedder = embedder
        self._identity = identity

    @property
    def name(self) -> str:
        return str(self.embedder.name_or_path)

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def prompts(self) -> Mapping[str, str]:
        return self.embedder.prompts

    def encode(self, texts: Sequence[str], *, prompt: str, batch_size: int) -> np.ndarray:
        out = self.embedder.encode(list(texts), prompt=prompt, batch_size=batch_size, show_progress=False)
        return np.asarray(out, dtype=np.float32)


class SentenceTransformerEncoder:
    """A `sentence_transformers.SentenceTransformer` as an `Encoder` (output as the model's modules give
    it: normalized only if the model ends with a Normalize module, as in MTEB)."""

    def __init__(self, model: Any, name: str, identity: str) -> None:
        self.model = model
        self._name = name
        self._identity = identity

    @property
    def name(self) -> str:
        return self._name

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def prompts(self) -> Mapping[str, str]:
        return dict(self.model.prompts or {})

    def encode(self, texts: Sequence[str], *, prompt: str, batch_size: int) -> np.ndarray:
        out = self.model.encode(
            list(texts), prompt=prompt, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32)


def detect_backend(path_or_name: str) -> str:
    """The backend for a model: `sentence-transformers` for a local directory holding a sentence-transformers
    model that is not a Gemma checkpoint (by config.json `model_type`), else `gemma-embed`."""
    path = Path(path_or_name).expanduser()
    if not (path / "modules.json").is_file():
        return "gemma-embed"
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type", "")
    except (OSError, ValueError):
        model_type = ""
    return "gemma-embed" if str(model_type).startswith("gemma") else "sentence-transformers"


def load_encoder(
    path_or_name: str, *, backend: str = "auto", device: str = "cpu", dtype: str | None = None
) -> Encoder:
    """Load a model for evaluation.

    backend: "gemma-embed" (`gemma_embed.load`), "sentence-transformers" (a local model directory; needs
    the `sentence-transformers` package) or "auto" (sentence-transformers for a non-Gemma directory with a
    modules.json, gemma-embed otherwise).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = detect_backend(path_or_name)
    if backend == "gemma-embed":
        import gemma_embed
        from gemma_embed.encode import resolve_model_path

        embedder = gemma_embed.load(path_or_name, device=device, dtype=dtype)
        # The resolved directory (a built-in name or a cached hub id included), so new files mean a new identity.
        identity = model_identity(backend, str(resolve_model_path(path_or_name)), dtype=dtype)
        return GemmaEmbedEncoder(embedder, identity)
    if dtype is not None:
        raise ConfigError("--dtype applies to gemma-embed checkpoints only")
    if not Path(path_or_name).expanduser().is_dir():
        raise CheckpointError(
            f"{path_or_name}: not a directory; the sentence-transformers backend loads local "
            "model directories only"
        )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            "the sentence-transformers backend needs the sentence-transformers package "
            "(pip install 'gemma-embed[reference]')"
        ) from None
    model = SentenceTransformer(str(Path(path_or_name).expanduser()), device=device, local_files_only=True)
    return SentenceTransformerEncoder(model, str(path_or_name), model_identity(backend, path_or_name))
