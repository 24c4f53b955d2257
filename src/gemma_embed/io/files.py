"""Atomic file and directory writes: a reader sees the old content or the complete new one, never a half.

Temporary files are created next to their target (same filesystem, so the final rename is atomic) and get
the permissions a plain `open()` would give (mkstemp/mkdtemp default to owner-only).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gemma_embed.errors import GemmaEmbedError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file next to `path`; it replaces `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented UTF-8 JSON, atomically."""
    with atomic_write(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


def _plain_permissions(root: Path) -> None:
    """Give a tree the modes `open()`/`mkdir()` would (some writers, safetensors included, use 0600)."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o777 & ~mask)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~mask)


@contextmanager
def atomic_directory(
    path: str | Path, *, overwrite: bool = False, error: type[GemmaEmbedError] = GemmaEmbedError
) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces `path` only when the block succeeds.

    An existing non-empty `path` is refused (raising `error`) unless `overwrite`; it is then moved aside,
    replaced, and deleted last, so an interruption never leaves `path` missing or half-written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise error(f"{path} exists and is not empty; choose another path or allow overwriting")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        _plain_permissions(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
