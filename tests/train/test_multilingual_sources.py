"""Multilingual training sources on a small data root made here: the parallel (Multi30k, stsb_multi_mt) and
monolingual (KorSTS, JSTS, Chinese STS-B, KorNLI, OCNLI) converters read train (KorNLI: dev) splits only, and
a sentence of any test split cannot enter a training set even when it also sits in a train file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from gemma_embed.paths import data_root
from gemma_embed.train.data.sources import SOURCES, convert, held_out, text_key
from gemma_embed.train.data.sources.files import MULTI30K_LANGS, STSB_MT_LANGS, XQUAD_LANGS

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


def _nli_rows(split: str) -> list[tuple[str, str, str]]:
    rows = [(f"{split} premise {i}.", f"{split} entailed {i}.", "entailment") for i in range(3)] + [
        (f"{split} premise {i}.", f"{split} contradicted {i}.", "contradiction") for i in range(3)
    ]
    if split in ("dev", "train"):
        rows.append((NLI_LEAK, f"{split} entailed one.", "entailment"))
        rows.append(("test premise 1.", f"{split} entailed copy.", "entailment"))
    if split == "test":
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


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _sts_files(root)
    _nli_files(root)
    _multi30k_files(root)
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
    assert held.groups["multilingual-test-splits"].kind == "test"
    test_splits = held.groups["multilingual-test-splits"].keys
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
