"""The raw-text corpus: held-out texts removed, exact deduplication, deterministic held-back split."""

import csv
import json

import pytest

from gemma_embed.errors import DataError
from gemma_embed.paths import data_root
from gemma_embed.train.data import corpus as corpus_module
from gemma_embed.train.data import sources
from gemma_embed.train.data.corpus import (
    HELDOUT_FILE,
    STATS_FILE,
    TRAIN_FILE,
    build_corpus,
    corpus_texts,
    is_heldout,
    read_corpus,
)
from gemma_embed.train.data.sources import raw as raw_sources
from gemma_embed.train.data.sources import text_key

ROOT = data_root()
needs_data = pytest.mark.skipif(not (ROOT / "README.md").is_file(), reason=f"shared data not found at {ROOT}")
# The source groups most at risk of carrying evaluation text: STS-B itself (all splits are read), the caption
# sets STS-B's "images" genre was drawn from, SNLI (Flickr30k captions), and the documents (SciFact: documents
# are in the corpus, queries must not be); English only, to keep the test fast.
AT_RISK = {"sts", "captions", "nli", "documents"}


def _english(reader):
    return lambda root: ((lang, text) for lang, text in reader(root) if lang == "en")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    if not (ROOT / "README.md").is_file():
        pytest.skip(f"shared data not found at {ROOT}")
    subset = {name: _english(reader) for name, reader in sources.RAW_TEXTS.items() if name in AT_RISK}
    patch = pytest.MonkeyPatch()
    patch.setattr(raw_sources, "RAW_TEXTS", subset)
    out = tmp_path_factory.mktemp("corpus")
    try:
        stats = build_corpus(out, ROOT)
    finally:
        patch.undo()
    return out, stats


@needs_data
def test_corpus_has_no_sts_test_sentence_or_scifact_query(small_corpus):
    out, _ = small_corpus
    texts = read_corpus(out / TRAIN_FILE) + read_corpus(out / HELDOUT_FILE)
    keys = {text_key(t.text) for t in texts}
    with (ROOT / "stsbenchmark" / "sts-test.csv").open(encoding="utf-8") as handle:
        sts_test = {
            text_key(s)
            for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            for s in row[5:7]
        }
    with (ROOT / "scifact" / "queries.jsonl").open(encoding="utf-8") as handle:
        claims = {text_key(json.loads(line)["text"]) for line in handle}
    assert not keys & sts_test
    assert not keys & claims  # neither test nor train (model-selection) SciFact queries
    by_source = {t.source for t in texts}
    assert by_source == AT_RISK
    assert sum(t.text.startswith("Microstructural development of human newborn") for t in texts) == 1
    assert sum(t.source == "documents" for t in texts) > 15_000  # SciFact's 5183 and mini-BEIR's documents


@needs_data
def test_corpus_is_deduplicated_split_and_counted(small_corpus):
    out, stats = small_corpus
    train, heldout = read_corpus(out / TRAIN_FILE), read_corpus(out / HELDOUT_FILE)
    all_texts = [t.text for t in train + heldout]
    assert len(all_texts) == len(set(all_texts))
    assert all(t.text == t.text.strip() and t.text for t in train)
    assert all(is_heldout(t.text) for t in heldout) and not any(is_heldout(t.text) for t in train)
    assert 0.01 < len(heldout) / len(all_texts) < 0.03
    assert stats["train"]["texts"] == len(train) and stats["heldout"]["texts"] == len(heldout)
    assert json.loads((out / STATS_FILE).read_text(encoding="utf-8"))["train"]["by_lang"]["en"] > 50_000


def test_filter_and_dedup_with_synthetic_texts(monkeypatch, tmp_path):
    raw = [
        ("a", "en", " Hello there. "),
        ("b", "en", "Hello there."),
        ("a", "en", "SECRET test sentence"),
        ("c", "de", ""),
    ]
    monkeypatch.setattr(corpus_module, "raw_texts", lambda root: iter(raw))
    monkeypatch.setattr(
        corpus_module,
        "held_out",
        lambda root: sources.HeldOut(
            [sources.HeldOutGroup("t", "evaluation", frozenset({"secrettestsentence"}))]
        ),
    )
    assert [(t.text, t.lang, t.source) for t in corpus_texts(tmp_path)] == [("Hello there.", "en", "a")]


def test_is_heldout_is_deterministic():
    sample = [f"text number {i}" for i in range(5000)]
    assert [is_heldout(t) for t in sample] == [is_heldout(t) for t in sample]
    assert 50 < sum(map(is_heldout, sample)) < 150


def test_read_corpus_rejects_bad_rows(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok", "lang": "en", "source": "x"}\n{"text": "no lang"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl, line 2"):
        read_corpus(path)
    with pytest.raises(DataError, match="no such corpus file"):
        read_corpus(tmp_path / "missing.jsonl")
