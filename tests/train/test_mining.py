"""Hard-negative mining with a tiny fake encoder whose similarities are known exactly."""

import json

import numpy as np
import pytest

from gemma_embed.errors import ConfigError, InputError
from gemma_embed.io.files import write_json
from gemma_embed.train.data.mining import mine_hard_negatives, mine_training_sets
from gemma_embed.train.data.pairs import MANIFEST, Example, PairDataset, load_training_sets


class AngleEncoder:
    """Text 'q' and every 'd<k>' get unit vectors at angle k degrees (q at 0): similarity falls with k.

    'p' (the positive) sits at 30 degrees, so it would rank in the middle if it were not excluded.
    """

    def __init__(self) -> None:
        self.prompts: list[str | None] = []

    def encode(self, texts, task=None, prompt=None, dim=None, batch_size=32, show_progress=None):
        self.prompts.append(prompt)
        angles = [0.0 if t.startswith("q") else 30.0 if t.startswith("p") else float(t[1:]) for t in texts]
        radians = np.deg2rad(angles)
        return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


DOCS = [f"d{k}" for k in range(1, 61)]  # rank r (from 0) after excluding the positive is d{r+1}


def _dataset(examples=None) -> PairDataset:
    examples = examples or [Example("q", "p")]
    return PairDataset(examples, name="toy", query_prompt="Q: ", document_prompt="D: ")


def _mine(**options):
    options.setdefault("show_progress", False)
    mined, stats = mine_hard_negatives(_dataset(options.pop("examples", None)), AngleEncoder(), **options)
    return mined, stats


def test_window_is_respected_and_positive_excluded():
    for seed in range(20):
        mined, stats = _mine(pool=["p", *DOCS], window=(10, 20), num_negatives=3, seed=seed)
        negatives = mined[0].negatives
        assert len(negatives) == 3 and "p" not in negatives
        assert all(11 <= int(n[1:]) <= 20 for n in negatives), negatives
        assert (stats.examples, stats.mined, stats.without_negative) == (1, 3, 0)


def test_sampling_is_seeded():
    first = _mine(pool=DOCS, window=(0, 40), num_negatives=2, seed=5)[0][0].negatives
    assert first == _mine(pool=DOCS, window=(0, 40), num_negatives=2, seed=5)[0][0].negatives
    others = {_mine(pool=DOCS, window=(0, 40), num_negatives=2, seed=s)[0][0].negatives for s in range(10)}
    assert len(others) > 1


def test_margin_skips_candidates_close_to_the_positive():
    # Positive at 30 degrees: with margin 0.05 a candidate needs cos(k) < cos(30) - 0.05, i.e. k > 35.3.
    mined, stats = _mine(pool=DOCS, window=(0, 60), num_negatives=5, margin=0.05)
    assert all(int(n[1:]) >= 36 for n in mined[0].negatives) and len(mined[0].negatives) == 5
    assert stats.below_margin == 35


def test_positives_excluded_by_text_and_by_key():
    examples = [Example("q", "d1", positive_key="intent-a"), Example("q", "d2", positive_key="intent-a")]
    keys = ["intent-a" if k <= 5 else "intent-b" for k in range(1, 61)]
    mined, _ = _mine(examples=examples, pool=DOCS, pool_keys=keys, window=(0, 3), num_negatives=3)
    assert all(set(e.negatives) == {"d6", "d7", "d8"} for e in mined)  # d1..d5 share the positives' key
    by_text, _ = _mine(
        examples=[Example("q", "d1"), Example("q", "d2")], pool=DOCS, window=(0, 1), num_negatives=1
    )
    assert [e.negatives for e in by_text] == [("d3",), ("d3",)]  # both positives of the query are excluded


def test_default_pool_prompts_and_existing_negatives_kept():
    encoder = AngleEncoder()
    examples = [Example(f"q{i}", f"d{i + 1}", ("old",)) for i in range(30)]
    mined, stats = mine_hard_negatives(_dataset(examples), encoder, window=(2, 4), show_progress=False)
    assert encoder.prompts == ["Q: ", "D: "]
    assert all(e.negatives[0] == "old" and len(e.negatives) == 2 for e in mined)
    assert all(e.negatives[1] in {"d4", "d5"} for e in mined if e.positive == "d1")
    assert stats.mined == 30 and (mined.name, mined.query_prompt) == ("toy", "Q: ")


def test_too_few_candidates_and_bad_options():
    mined, stats = _mine(pool=["p", "d1", "d2"], window=(1, 10), num_negatives=5)
    assert mined[0].negatives == ("d2",) and stats.mined == 1
    empty, stats = _mine(pool=["p"], window=(0, 5))
    assert empty[0].negatives == () and stats.without_negative == 1
    with pytest.raises(ConfigError, match="window"):
        _mine(pool=DOCS, window=(5, 5))
    with pytest.raises(ConfigError, match="num_negatives"):
        _mine(pool=DOCS, num_negatives=0)
    with pytest.raises(InputError, match="pool_keys"):
        _mine(pool=DOCS, pool_keys=["a"])


def test_mine_training_sets_writes_sets_and_manifest(tmp_path):
    src, out = tmp_path / "sets", tmp_path / "mined"
    _dataset([Example(f"q{i}", f"d{i + 1}") for i in range(20)]).save(src / "toy.jsonl")
    write_json(
        src / MANIFEST,
        {"sets": {"toy": {"file": "toy.jsonl", "query_prompt": "Q: ", "document_prompt": "D: "}}},
    )
    results = mine_training_sets(src, out, AngleEncoder(), window=(0, 5), show_progress=False)
    assert results["toy"].mined == 20
    (toy,) = load_training_sets(out)
    assert all(len(e.negatives) == 1 for e in toy) and toy.document_prompt == "D: "
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["sets"]["toy"]["with_negatives"] == 20 and manifest["sets"]["toy"]["mining"]["options"][
        "window"
    ] == [0, 5]
