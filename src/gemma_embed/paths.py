"""Where the project's data and generated files live.

The real data is read where it is, never copied: `$GEMMA_EMBED_DATA` when set, else `../shared/data`
beside the repository root. Generated corpora, tokenizers and caches go under `runs/` (git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "GEMMA_EMBED_DATA"


def repo_root() -> Path:
    """The repository root of a source checkout (where pyproject.toml is), else the working directory."""
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / "pyproject.toml").is_file() else Path.cwd()


def data_root() -> Path:
    """`$GEMMA_EMBED_DATA`, else `../shared/data` relative to the repository root."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else (repo_root() / ".." / "shared" / "data").resolve()


def runs_dir() -> Path:
    """`runs/` under the repository root: generated corpora, tokenizers and caches."""
    return repo_root() / "runs"
