"""Multilingual and dev-split training sources on a small data root made here: the parallel (Multi30k,
stsb_multi_mt) and monolingual (KorSTS, JSTS, Chinese STS-B, KorNLI, OCNLI) converters read train (KorNLI: dev)
splits only, the sets with no train split (SNLI, JNLI, JSQuAD, MS-docs) read dev / valid only, and a sentence of
any test split cannot enter a training set even when it also sits in a train file. On the real data, the raw
corpus reader opens no test file."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from gemma_embed.io import tables
from gemma_embed.paths import data_root
from gemma_embed.train.data.sources import RAW_TEXTS, SOURCES, convert, held_out, raw_texts, text_key
from gemma_embed.train.data.sources.files import (
    CODE_SEARCH,
    JAVA_CS,
    MSDOCS,
    MSDOCS_LANGS,
    MULTI30K_LANGS,
    STSB_MT_LANGS,
    XQUAD_LANGS,
)

# Sentences of test splits copied into the train files below (one per kind of dataset, so that each
# held-out group is needed): the held-out filter must drop their rows.
LEAK = "An STS test split sentence that must never be trained on."
NLI_LEAK = "An NLI test split premise that must never be trained on."
CAPTION_LEAK = "A Multi30k test split caption that must never be trained on."
STS_SPLITS = {"train": "train", "dev": "valid", "test": "test"}  # STS-B name -> JSTS / Chinese STS-B name


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")


def _lines(*rows: str) -> str:
    return "".join(row + "\n" for row in rows)


def _pairs(split: str, lang: str) -> list[tuple[str, str, float]]:
    """Three scored pairs of one STS split; train splits also hold the test sentence LEAK."""
    rows = [(f"{lang} {split} sentence {i}.", f"{lang} {split} other sentence {i}.", 4.5) for i in range(3)]
    test = (f"{lang} test sentence 0.", f"{lang} test other sentence 0.", 4.5)
    if split == "train":
        rows += [(LEAK, f"{lang} train paraphrase of it.", 4.8), (test[0], f"{lang} train copy.", 4.2)]
    if split == "test":
        rows.append((LEAK, f"{lang} test other.", 4.0))
    return rows


def _sts_files(root: Path) -> None:
    for split, other_name in STS_SPLITS.items():
        en = _pairs(split, "en")
        _write(
            root / "stsbenchmark" / f"sts-{split}.csv",
            _lines(*(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}" for i, (a, b, s) in enumerate(en))),
        )
        ko = _pairs(split, "ko")
        _write(
            root / "korsts" / f"sts-{split}.tsv",
            _lines(
                "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2",
                *(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}" for i, (a, b, s) in enumerate(ko)),
            ),
        )
        for lang in ("en", *STSB_MT_LANGS):
            rows = en if lang == "en" else _pairs(split, lang)
            _write(
                root / "stsb_multi_mt" / "data" / f"stsb-{lang}-{split}.csv",
                _lines(*(f'"{a}","{b}",{s}' for a, b, s in rows)),
            )
        _write(
            root / "jglue" / "jsts-v1.3" / f"{other_name}-v1.3.json",
            _lines(
                *(
                    json.dumps({"sentence1": a, "sentence2": b, "label": s}, ensure_ascii=False)
                    for a, b, s in _pairs(split, "ja")
                )
            ),
        )
        _write(
            root / "text2vec_zh" / "STS-B" / f"STS-B.{other_name}.data",
            _lines(*(f"{a}\t{b}\t{round(s)}" for a, b, s in _pairs(split, "zh"))),
        )


def _nli_rows(split: str, tag: str = "") -> list[tuple[str, str, str]]:
    """NLI rows of one split; the other splits also hold a copy of the test premise `{tag}test premise 1.`."""
    rows = [(f"{tag}{split} premise {i}.", f"{split} entailed {i}.", "entailment") for i in range(3)] + [
        (f"{tag}{split} premise {i}.", f"{split} contradicted {i}.", "contradiction") for i in range(3)
    ]
    if split != "test":
        rows.append((f"{tag}test premise 1.", f"{split} entailed copy.", "entailment"))
        if not tag:
            rows.append((NLI_LEAK, f"{split} entailed one.", "entailment"))
    elif not tag:
        rows.append((NLI_LEAK, "test entailed one.", "entailment"))
    return rows


def _nli_files(root: Path) -> None:
    for split in ("dev", "test"):
        _write(
            root / "kornli_xnli" / f"xnli.{split}.ko.tsv",
            _lines("sentence1\tsentence2\tgold_label", *("\t".join(r) for r in _nli_rows(split))),
        )
    for name, split in (("train.10k", "train"), ("dev", "dev"), ("test", "test")):
        _write(
            root / "ocnli" / f"{name}.json",
            _lines(
                *(json.dumps({"sentence1": a, "sentence2": b, "label": c}) for a, b, c in _nli_rows(split))
            ),
        )


def _multi30k_files(root: Path) -> None:
    raw = root / "multi30k" / "data" / "task1" / "raw"
    for lang in ("en", *MULTI30K_LANGS):
        train = [f"{lang} caption {i}." for i in range(4)] + [
            CAPTION_LEAK if lang == "en" else f"{lang} leak."
        ]
        _write(raw / f"train.{lang}.gz", _lines(*train))
        _write(
            raw / f"test_2016_flickr.{lang}.gz",
            _lines(CAPTION_LEAK if lang == "en" else f"{lang} leak.", "x."),
        )


def _dev_split_files(root: Path) -> None:
    """SNLI dev/test, JNLI and JSQuAD valid/test, MS-docs dev/test: each test split has one text that the
    dev / valid split copies (`<set> test ... 1`)."""
    for split in ("dev", "test"):
        rows = _nli_rows(split, "snli ")
        for name, column in (("s1", 0), ("s2", 1), ("labels", 2)):
            _write(root / "snli_devtest_esnli" / f"{name}.{split}", _lines(*(r[column] for r in rows)))
    for split in ("valid", "test"):
        _write(
            root / "jglue" / "jnli-v1.3" / f"{split}-v1.3.json",
            _lines(
                *(
                    json.dumps({"sentence1": a, "sentence2": b, "label": c})
                    for a, b, c in _nli_rows(split, "jnli ")
                )
            ),
        )
        qas = [(f"jsquad {split} question {i}?", f"jsquad {split} paragraph {i}.") for i in range(3)]
        if split == "valid":
            qas.append(("jsquad test question 1?", "jsquad valid paragraph 9."))
        articles = [{"paragraphs": [{"context": p, "qas": [{"question": q}]}]} for q, p in qas]
        _write(root / "jglue" / "jsquad-v1.3" / f"{split}-v1.3.json", json.dumps({"data": articles}))
    for split in ("dev", "test"):
        for lang in MSDOCS_LANGS:
            for side in ("en", lang):
                lines = [f"msdocs {split} {side} line {i}." for i in range(3)]
                if split == "dev":
                    lines.append(f"msdocs test {side} line 1.")
                _write(root.joinpath(*MSDOCS, split, f"{lang}-en.{split}.{side}"), _lines(*lines))


def _other_held_out_files(root: Path) -> None:
    """The evaluation files the held-out filter reads besides the STS, NLI and Multi30k ones (one row each)."""
    _write(root / "scifact" / "queries.jsonl", _lines(json.dumps({"_id": "1", "text": "A claim."})))
    for split in ("train", "test"):
        _write(root / "scifact" / "qrels" / f"{split}.tsv", _lines("query-id\tcorpus-id\tscore", "1\t2\t1"))
    _write(root / "banking77" / "test.csv", _lines("text,category", "my card,card"))
    twitter = root / "castorini_data" / "twitterPPDB"
    for split in ("train", "test"):
        for side in ("a.toks", "b.toks"):
            _write(twitter / split / side, _lines("a tweet"))
    _write(twitter / "Twitter_URL_Corpus_testNew.larger.txt", _lines("one\ttwo\t(1,5)\turl"))
    _write(root / "tatoeba_laser" / "tatoeba.deu-eng.deu", _lines("Ein Satz."))
    _write(root / "tatoeba_laser" / "tatoeba.deu-eng.eng", _lines("A sentence."))
    for split in ("dev", "test"):
        _write(root / "cosqa" / f"cosqa-retrieval-{split}-500.json", json.dumps([{"doc": f"{split} query"}]))
    _write(
        root / "clinc150" / "data" / "data_full.json",
        json.dumps({"test": [["book a flight", "travel"]], "oos_test": [["sing", "oos"]]}),
    )
    _write(
        root / "snips" / "2017-06-custom-intent-engines" / "Play" / "validate_Play.json",
        json.dumps({"Play": [{"data": [{"text": "play a song"}]}]}),
    )
    _write(root / "ag_news_test" / "test.csv", _lines('3,"A title","A description"'))
    for name in ("msmarco", "dbpedia", "arcd"):
        _write(
            root / "mini_beir_agentset" / name / "queries.jsonl",
            _lines(json.dumps({"_id": "q", "text": f"{name} query"})),
        )
    squad = {"data": [{"paragraphs": [{"context": "A paragraph.", "qas": [{"question": "A question?"}]}]}]}
    for lang in XQUAD_LANGS:
        _write(root / "xquad" / f"xquad.{lang}.json", json.dumps(squad))
    for side in ("a.toks", "b.toks"):
        _write(root / "castorini_data" / "WikiQA" / "test" / side, _lines(f"wikiqa test {side}"))
    _write(root / "conala" / "conala_test_500.json", json.dumps([{"intent": "conala test intent"}]))
    for lang in ("es", "ja", "ru"):
        _write(
            root / "conala" / "mconala" / "dataset" / "test" / f"{lang}_test.json",
            json.dumps([{"intent": f"{lang} intent", "rewritten_intent": None}]),
        )
    _write(root.joinpath(*CODE_SEARCH, "data", "test_webquery.json"), json.dumps([{"doc": "webquery test"}]))
    for side in ("java", "cs"):
        _write(root.joinpath(*JAVA_CS, f"test.java-cs.txt.{side}"), _lines(f"void test{side}() {{}}"))
    for name in ("dc", "dd"):
        _write(
            root / "text2vec_zh" / "SOHU" / f"{name}-test.jsonl",
            _lines(json.dumps({"sentence1": f"{name} 一", "sentence2": f"{name} 二", "label": 1})),
        )


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _sts_files(root)
    _nli_files(root)
    _multi30k_files(root)
    _dev_split_files(root)
    _other_held_out_files(root)
    return root


MULTILINGUAL = [
    *(f"multi30k_{lang}" for lang in MULTI30K_LANGS),
    *(f"stsb_bitext_{lang}" for lang in STSB_MT_LANGS),
    *(f"stsb_mt_{lang}" for lang in STSB_MT_LANGS),
    "korsts",
    "jsts",
    "zh_stsb",
    "kornli",
    "ocnli",
]


def test_test_split_sentences_never_enter_a_multilingual_set(small_root):
    held = held_out(small_root)
    assert {text_key("A paragraph."), text_key("A question?")} <= held.groups["xquad"].keys
    assert held.groups["training-test-splits"].kind == "test"
    test_splits = held.groups["training-test-splits"].keys
    assert {text_key(CAPTION_LEAK), text_key(NLI_LEAK), text_key("test premise 1.")} <= test_splits
    assert text_key(LEAK) in held.groups["stsb-test"].keys and text_key(LEAK) not in test_splits
    for name in MULTILINGUAL:
        examples, stats = convert(name, small_root)
        assert examples, name
        assert stats.held_out > 0, name  # the train-side copies of test sentences were read and dropped
        for example in examples:
            for text in (example.query, example.positive, *example.negatives):
                assert text_key(text) not in held.blocked(), (name, text)
                assert "test" not in text, (name, text)


def test_converters_read_the_train_split_and_pair_sources_with_translations(small_root):
    multi30k, _ = convert("multi30k_de", small_root)
    assert [(e.query, e.positive) for e in multi30k] == [
        (f"en caption {i}.", f"de caption {i}.") for i in range(4)
    ]
    bitext, _ = convert("stsb_bitext_fr", small_root)
    assert ("en train sentence 0.", "fr train sentence 0.") in [(e.query, e.positive) for e in bitext]
    assert all(e.query.startswith("en train") and e.positive.startswith("fr train") for e in bitext)
    kornli, _ = convert("kornli", small_root)  # XNLI dev only: its test split is held out
    assert {e.query for e in kornli} == {f"dev premise {i}." for i in range(3)}
    assert all(e.negatives == (f"dev contradicted {e.query[-2]}.",) for e in kornli)
    ocnli, _ = convert("ocnli", small_root)
    assert {e.query for e in ocnli} == {f"train premise {i}." for i in range(3)}


def test_bitext_sources_have_an_english_source_side():
    bitext = [source for source in SOURCES.values() if source.task == "bitext"]
    assert len(bitext) >= len(MULTI30K_LANGS) + len(STSB_MT_LANGS)
    for source in bitext:
        assert source.query_lang == "en" and source.doc_lang not in ("en", "code"), source.name


ROOT = data_root()


@pytest.mark.skipif(not (ROOT / "README.md").is_file(), reason=f"shared data not found at {ROOT}")
def test_no_multi30k_or_kornli_test_sentence_in_the_real_sets():
    raw = ROOT / "multi30k" / "data" / "task1" / "raw"
    test = {
        text_key(line)
        for path in raw.glob("test_*.gz")
        for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
    }
    kornli_test = (ROOT / "kornli_xnli" / "xnli.test.ko.tsv").read_text(encoding="utf-8").splitlines()[1:]
    test |= {text_key(cell) for line in kornli_test for cell in line.split("\t")[:2]}
    assert len(test) > 10_000
    for name in ("multi30k_de", "kornli"):
        examples, _ = convert(name)
        assert len(examples) > 500, name
        for example in examples:
            for text in (example.query, example.positive, *example.negatives):
                assert text_key(text) not in test, (name, text)


# (set, the dev / valid split's premise / question / source prefix, its test-split copy) of the sets that have
# no train split in the snapshot
DEV_SPLIT_SETS = [
    ("snli", "snli dev premise", "snli test premise 1."),
    ("jnli", "jnli valid premise", "jnli test premise 1."),
    ("jsquad", "jsquad valid question", "jsquad test question 1?"),
    *((f"msdocs_bitext_{lang}", "msdocs dev en line", "msdocs test en line 1.") for lang in MSDOCS_LANGS),
]


@pytest.mark.parametrize(("name", "prefix", "test_copy"), DEV_SPLIT_SETS)
def test_sets_without_a_train_split_read_dev_only_and_drop_test_copies(small_root, name, prefix, test_copy):
    held = held_out(small_root)
    assert text_key(test_copy) in held.groups["training-test-splits"].keys
    examples, stats = convert(name, small_root)
    assert {e.query for e in examples} == {f"{prefix} {i}{test_copy[-1]}" for i in range(3)}
    assert stats.held_out > 0, name  # the dev-side copy of the test text was read and dropped
    for example in examples:
        for text in (example.query, example.positive, *example.negatives):
            assert "test" not in text, (name, text)


# a test split in a path below the data root: a test/ folder or a file named test*, *test* or *.test.*, e.g.
# sts-test.csv, xnli.test.ko.tsv, s1.test, test_2016_flickr.en.gz, es_test.json, dd-test.jsonl
TEST_SPLIT = re.compile(r"(?:^|[/._-])test(?:[/._-]|$)")


def test_the_test_split_pattern():
    assert all(
        TEST_SPLIT.search(path)
        for path in (
            "stsbenchmark/sts-test.csv",
            "snli_devtest_esnli/s1.test",
            "castorini_data/WikiQA/test/a.toks",
            "multi30k/data/task1/raw/test_2016_flickr.en.gz",
            "conala/conala_test_500.json",
            "codexglue/Text-Code/NL-code-search-WebQuery/data/test_webquery.json",
            "text2vec_zh/SOHU/dc-test.jsonl",
        )
    )
    assert not any(TEST_SPLIT.search(path) for path in ("snli_devtest_esnli/s1.dev", "ocnli/train.10k.json"))


@pytest.mark.skipif(not (ROOT / "README.md").is_file(), reason=f"shared data not found at {ROOT}")
def test_the_raw_corpus_reads_no_test_split(monkeypatch):
    read: list[str] = []
    real_read_text = tables.read_text

    def recording_read_text(path: Path, **kwargs) -> str:
        read.append(path.relative_to(ROOT).as_posix())
        return real_read_text(path, **kwargs)

    monkeypatch.setattr(tables, "read_text", recording_read_text)
    rows = list(raw_texts(ROOT))
    assert {source for source, _, _ in rows} == set(RAW_TEXTS)
    xquad = held_out(ROOT).groups["xquad"]  # XQuADRetrieval's questions and its corpus, the paragraphs
    assert xquad.kind == "evaluation" and len(xquad.keys) > 12 * 1000
    assert not any(text_key(text) in xquad.keys for _, _, text in rows)
    dev_splits = {"snli_devtest_esnli/s1.dev", "jglue/jnli-v1.3/valid-v1.3.json", "ocnli/dev.json"}
    assert len(read) > 50 and dev_splits <= set(read)
    assert [path for path in read if TEST_SPLIT.search(path)] == []
