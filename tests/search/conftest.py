"""Fixtures of the search tests: a CLI runner with the search subcommands, small corpora, a second model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import write_random_checkpoint

DOCS = [
    {"id": "d1", "title": "Mars", "text": "Mars is the red planet of the solar system."},
    {"id": "d2", "title": "Venus", "text": "Venus is the hottest planet."},
    {"id": "d3", "title": "", "text": "Bread is baked from flour, water and yeast."},
    {"id": "d4", "title": "Jupiter", "text": "Jupiter is a gas giant with many moons."},
    {"id": "d5", "title": "Tea", "text": "Green tea is brewed from Camellia leaves."},
    {"id": "d6", "title": "Rivers", "text": "The Nile and the Amazon are long rivers."},
    {"id": "d7", "title": "Chess", "text": "Chess is a game of two players on 64 squares."},
]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple]:
    """Run `gemma-embed ARGS`; returns (exit code, stdout, stderr)."""
    from gemma_embed import cli

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def docs_rows() -> list[dict[str, str]]:
    """The rows of `docs_jsonl`."""
    return [dict(d) for d in DOCS]


@pytest.fixture
def docs_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second random tiny checkpoint (another seed): a different model identity."""
    from gemma_embed.model import preset

    out = tmp_path_factory.mktemp("tiny-other") / "ckpt"
    return write_random_checkpoint(out, preset("tiny").replace(vocab_size=400), seed=2)
