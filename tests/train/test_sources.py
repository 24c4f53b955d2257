"""Converters of ../shared/data: registry, row counts, prompts, and no evaluation text in any training set."""

import csv
import json

import pytest

from gemma_embed.errors import DataError
from gemma_embed.paths import data_root
from gemma_embed.train.data.pairs import TASK_PROMPTS, load_training_sets
from gemma_embed.train.data.sources import (
    SOURCES,
    HeldOut,
    HeldOutGroup,
    convert,
    default_sets,
    held_out,
    load_source,
    text_key,
    write_training_sets,
)

ROOT = data_root()
needs_data = pytest.mark.skipif(not (ROOT / "README.md").is_file(), reason=f"shared data not found at {ROOT}")


def test_text_key_ignores_case_spacing_punctuation_and_width():
    assert (
        text_key("A man , is playing a flute .")
        == text_key("a man, is playing a flute.")
        == "amanisplayingaflute"
    )
    assert text_key("Ｆｕｌｌ　ｗｉｄｔｈ") == "fullwidth"
    assert text_key("一架飞机要起飞了。") == "一架飞机要起飞了"
    assert text_key("?!") == ""


def test_held_out_groups_and_exemptions():
    held = HeldOut(
        [
            HeldOutGroup("test", "evaluation", frozenset({"alpha"})),
            HeldOutGroup("dev", "selection", frozenset({"beta"})),
        ]
    )
    assert held.contains("Alpha!") and held.contains("beta")
    assert not held.contains("beta", exempt=["dev"]) and held.contains("alpha", exempt=["dev"])
    assert not held.contains("...")


def test_registry_is_consistent():
    for name, source in SOURCES.items():
        assert source.task in TASK_PROMPTS, name
        assert source.licence and source.description, name
        assert source.default == (not source.exempt), name
    defaults = set(default_sets())
    assert "stsb_dev" not in defaults and not any(n.startswith("xquad_") for n in defaults)
    assert {
        "stsb_train",
        "snli",
        "flickr8k",
        "wikiqa",
        "conala",
        "banking77",
        "ocnli",
        "text2vec_zh",
    } <= defaults
    assert SOURCES["snli"].prompts == (TASK_PROMPTS["sentence_similarity"][0],) * 2
    assert SOURCES["wikiqa"].prompts[1] == "title: none | text: "


@pytest.fixture(scope="module")
def converted():
    if not (ROOT / "README.md").is_file():
        pytest.skip(f"shared data not found at {ROOT}")
    return {name: convert(name) for name in default_sets()}


def _sts_test_sentences():
    with (ROOT / "stsbenchmark" / "sts-test.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return {s for row in rows for s in row[5:7]}


def _scifact_test_queries():
    with (ROOT / "scifact" / "qrels" / "test.tsv").open(encoding="utf-8") as handle:
        ids = {line.split("\t")[0].strip() for line in handle if line.strip()}
    with (ROOT / "scifact" / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = [json.loads(line) for line in handle]
    return {q["text"] for q in queries if q["_id"] in ids}


@needs_data
def test_no_evaluation_or_selection_text_in_any_default_set(converted):
    sts_test = {text_key(s) for s in _sts_test_sentences()}
    scifact_test = {text_key(q) for q in _scifact_test_queries()}
    assert len(sts_test) > 2000 and len(scifact_test) == 300
    blocked = held_out(ROOT).blocked()
    for name, (examples, _) in converted.items():
        for example in examples:
            for text in (example.query, example.positive, *example.negatives):
                key = text_key(text)
                assert key not in sts_test and key not in scifact_test, (name, text)
                assert key not in blocked, (name, text)


@needs_data
def test_row_counts_are_sane(converted):
    counts = {name: stats.written for name, (_, stats) in converted.items()}
    for name, (examples, stats) in converted.items():
        assert stats.written == len(examples) > 200, name
        assert stats.read >= stats.written + stats.held_out + stats.trivial + stats.duplicate, name
    assert 1000 < counts["stsb_train"] < 1406  # 1406 pairs score >= 4, minus held-out sentences
    assert counts["banking77"] > 9500 and counts["clinc150"] > 14000 and counts["snips"] > 13000
    assert 25_000 < counts["multi30k_de"] <= 29_000 and counts["flickr8k"] > 35_000
    assert sum(counts.values()) > 300_000
    snli, _ = converted["snli"]
    assert sum(bool(e.negatives) for e in snli) > 0.9 * len(snli)
    assert converted["stsb_train"][1].held_out > 50  # STS-B train shares sentences with test/dev


@needs_data
def test_group_ids_mask_same_intent_and_same_image(converted):
    banking, _ = converted["banking77"]
    assert all(e.query_key == e.positive_key and e.query_key.startswith("banking77:") for e in banking)
    assert len({e.query_key for e in banking}) == 77
    captions, _ = converted["flickr8k"]
    assert all(e.query_key.startswith("flickr8k:") for e in captions)


@needs_data
def test_selection_sets_exist_but_are_not_default():
    examples, stats = convert("stsb_dev")
    assert 150 < stats.written < 264 and all(e.query for e in examples)
    dataset = load_source("stsb_dev")
    assert len(dataset) == stats.written and dataset.query_prompt == "task: sentence similarity | query: "


@needs_data
def test_write_training_sets_round_trip(tmp_path):
    counts = write_training_sets(tmp_path, ["conala", "pubmedqa"])
    assert counts["conala"] > 2000 and counts["pubmedqa"] == 1000
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert (
        manifest["sets"]["conala"]["doc_lang"] == "code"
        and "CC BY-SA" in manifest["sets"]["conala"]["licence"]
    )
    conala, pubmedqa = load_training_sets(tmp_path)
    assert len(conala) == counts["conala"] and conala.query_prompt == "task: code retrieval | query: "
    assert pubmedqa.query_prompt == "task: question answering | query: "


def test_missing_data_root_names_the_path(tmp_path):
    with pytest.raises(DataError, match="missing; point GEMMA_EMBED_DATA"):
        list(SOURCES["pubmedqa"].convert(tmp_path))
