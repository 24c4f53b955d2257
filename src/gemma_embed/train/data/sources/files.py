"""Where each dataset lives in the shared data and how its files are laid out: one reader per dataset
file layout, yielding plain (text, text[, score | label]) tuples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gemma_embed.errors import DataError
from gemma_embed.io.tables import location, read_delimited, read_json, read_jsonl, read_lines
from gemma_embed.paths import DATA_ENV
from gemma_embed.train.data.pairs import Example

STS_POSITIVE_SCORE = 4.0
STSB_MT_LANGS = ("de", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh")
XQUAD_LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
MULTI30K_LANGS = ("de", "fr", "cs")
MULTI30K_RAW = ("multi30k", "data", "task1", "raw")
MSDOCS_LANGS = ("da", "lv", "no", "zh")
CODE_SEARCH = ("codexglue", "Text-Code", "NL-code-search-WebQuery")
JAVA_CS = ("codexglue", "Code-Code", "code-to-code-trans", "data")
MSDOCS = ("codexglue", "Text-Text", "text-to-text", "data")


# --------------------------------------------------------------------------------------------- paths


def required_file(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts)
    if not path.is_file():
        raise DataError(f"{path}: missing; point {DATA_ENV} at the shared data folder")
    return path


def required_lines(root: Path, *parts: str) -> list[str]:
    """The lines of a required line-aligned file."""
    return read_lines(required_file(root, *parts))


# --------------------------------------------------------------------------------------------- file layouts

ScoredPair = tuple[str, str, float]


def cell(row: dict[str, Any], column: str, path: Path, number: int) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{location(path, number)}: missing or empty {column!r}")
    return value


def _scored(
    path: Path, rows: Iterable[tuple[int, dict[str, Any]]], score: str = "score"
) -> Iterator[ScoredPair]:
    """(sentence1, sentence2, score) of table rows with those column names."""
    for n, row in rows:
        try:
            value = float(row.get(score))
        except (TypeError, ValueError):
            raise DataError(
                f"{location(path, n)}: similarity score {row.get(score)!r} is not a number"
            ) from None
        yield cell(row, "sentence1", path, n), cell(row, "sentence2", path, n), value


_STSB_FIELDS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
_PAIR_FIELDS = ("sentence1", "sentence2", "score")


def stsbenchmark(root: Path, split: str) -> Iterator[ScoredPair]:
    """English STS-B: TSV without header (genre, file, year, id, score, s1, s2[, sources])."""
    path = required_file(root, "stsbenchmark", f"sts-{split}.csv")
    return _scored(path, read_delimited(path, delimiter="\t", fieldnames=_STSB_FIELDS))


def stsb_multi_mt(root: Path, lang: str, split: str) -> Iterator[ScoredPair]:
    """stsb_multi_mt: CSV without header (s1, s2, score)."""
    path = required_file(root, "stsb_multi_mt", "data", f"stsb-{lang}-{split}.csv")
    return _scored(path, read_delimited(path, delimiter=",", fieldnames=_PAIR_FIELDS))


def korsts(root: Path, split: str) -> Iterator[ScoredPair]:
    """KorSTS: TSV with the STS-B header."""
    path = required_file(root, "korsts", f"sts-{split}.tsv")
    return _scored(path, read_delimited(path, delimiter="\t"))


def jglue_file(root: Path, task: str, split: str) -> Path:
    """A JGLUE v1.3 file: task jsts / jnli / jsquad, split train / valid / test (JNLI, JSQuAD: no train)."""
    return required_file(root, "jglue", f"{task}-v1.3", f"{split}-v1.3.json")


def jsts(root: Path, split: str) -> Iterator[ScoredPair]:
    """JGLUE JSTS: JSON lines with sentence1, sentence2, label (0-5)."""
    path = jglue_file(root, "jsts", split)
    return _scored(path, read_jsonl(path), score="label")


def zh_stsb(root: Path, split: str) -> Iterator[ScoredPair]:
    """text2vec Chinese STS-B: TSV without header (s1, s2, integer score)."""
    path = required_file(root, "text2vec_zh", "STS-B", f"STS-B.{split}.data")
    return _scored(path, read_delimited(path, delimiter="\t", fieldnames=_PAIR_FIELDS))


NliRow = tuple[str, str, str]  # premise, hypothesis, label


def _labelled(path: Path, rows: Iterable[tuple[int, dict[str, Any]]], label: str) -> Iterator[NliRow]:
    """(sentence1, sentence2, label) of table rows with those column names."""
    for n, row in rows:
        yield cell(row, "sentence1", path, n), cell(row, "sentence2", path, n), str(row.get(label))


def nli_jsonl(path: Path) -> Iterator[NliRow]:
    """OCNLI / JNLI: JSON lines with sentence1, sentence2, label."""
    return _labelled(path, read_jsonl(path), "label")


def kornli(path: Path) -> Iterator[NliRow]:
    """KorNLI: TSV with header sentence1, sentence2, gold_label."""
    return _labelled(path, read_delimited(path, delimiter="\t"), "gold_label")


def snli(root: Path, split: str) -> Iterator[NliRow]:
    """SNLI from e-SNLI: line-aligned s1 (premise), s2 (hypothesis), labels."""
    folder = "snli_devtest_esnli"
    columns = [required_lines(root, folder, f"{name}.{split}") for name in ("s1", "s2", "labels")]
    if len({len(c) for c in columns}) != 1:
        raise DataError(f"{root / folder}: s1/s2/labels.{split} have different line counts")
    yield from zip(*columns, strict=True)


def squad(path: Path) -> Iterator[tuple[str, str]]:
    """(question, paragraph) of a SQuAD-format JSON file (XQuAD, JSQuAD)."""
    for article in read_json(path)["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield qa["question"], paragraph["context"]


def aligned(path_a: Path, path_b: Path) -> Iterator[tuple[str, str]]:
    """Line pairs of two line-aligned files."""
    a, b = read_lines(path_a), read_lines(path_b)
    if len(a) != len(b):
        raise DataError(f"{path_a} and {path_b} should be line-aligned but have {len(a)} and {len(b)} lines")
    yield from zip(a, b, strict=True)


def banking77(root: Path, split: str) -> Iterator[tuple[str, str]]:
    """(utterance, intent) of Banking77 (CSV text,category)."""
    path = required_file(root, "banking77", f"{split}.csv")
    for n, row in read_delimited(path, delimiter=","):
        yield cell(row, "text", path, n), cell(row, "category", path, n)


def clinc150(root: Path, splits: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(utterance, intent) of CLINC150 data_full.json splits."""
    data = read_json(required_file(root, "clinc150", "data", "data_full.json"))
    for split in splits:
        yield from ((text, intent) for text, intent in data[split])


def snips(root: Path, kind: str) -> Iterator[tuple[str, str]]:
    """(utterance, intent) of SNIPS; kind 'train' (train_*_full.json) or 'validate'."""
    base = root / "snips" / "2017-06-custom-intent-engines"
    pattern = "train_*_full.json" if kind == "train" else "validate_*.json"
    paths = sorted(base.glob(f"*/{pattern}"))
    if not paths:
        raise DataError(f"{base}: no {pattern} files; point {DATA_ENV} at the shared data folder")
    for path in paths:
        for intent, items in read_json(path).items():
            for item in items:
                yield "".join(chunk["text"] for chunk in item["data"]), intent


def tweeteval_texts(root: Path, split: str) -> Iterator[str]:
    """Tweets of every TweetEval task for a split (train/val/test); the sentiment train file is absent."""
    for path in sorted((root / "tweeteval").glob(f"**/{split}_text.txt")):
        yield from read_lines(path)


def scifact_queries(root: Path, split: str) -> Iterator[str]:
    """SciFact claims of the queries judged in qrels/<split>.tsv."""
    qrels = required_file(root, "scifact", "qrels", f"{split}.tsv")
    ids = {row["query-id"].strip() for _, row in read_delimited(qrels, delimiter="\t")}
    path = required_file(root, "scifact", "queries.jsonl")
    for n, row in read_jsonl(path):
        if str(row.get("_id")) in ids:
            yield cell(row, "text", path, n)


def beir_texts(path: Path) -> Iterator[str]:
    """Title, newline, text of each row of a BEIR corpus.jsonl (text alone without a title; queries.jsonl)."""
    for n, row in read_jsonl(path):
        text = cell(row, "text", path, n)
        title = (row.get("title") or "").strip()
        yield f"{title}\n{text}" if title else text


def cosqa_queries(root: Path, split: str) -> Iterator[str]:
    for item in read_json(required_file(root, "cosqa", f"cosqa-retrieval-{split}-500.json")):
        yield item["doc"]


def twitter_url_texts(root: Path) -> Iterator[str]:
    base = root / "castorini_data" / "twitterPPDB"
    for split in ("train", "test"):
        for side in ("a.toks", "b.toks"):
            yield from required_lines(base, split, side)
    raw = required_file(base, "Twitter_URL_Corpus_testNew.larger.txt")
    for _, row in read_delimited(raw, delimiter="\t", fieldnames=("s1", "s2", "votes", "url")):
        yield from (row[k] for k in ("s1", "s2") if row[k])


def wikiqa_texts(root: Path, split: str) -> Iterator[str]:
    """Questions (a.toks) and candidate answer sentences (b.toks) of one WikiQA split."""
    for name in ("a.toks", "b.toks"):
        yield from required_lines(root, "castorini_data", "WikiQA", split, name)


def multi30k_test_texts(root: Path) -> Iterator[str]:
    """Every caption of the Multi30k test sets (test_2016_flickr, test_2017_flickr, test_2017_mscoco,
    test_2018_flickr), in every language."""
    base = root.joinpath(*MULTI30K_RAW)
    paths = sorted(base.glob("test_*.gz"))
    if not paths:
        raise DataError(f"{base}: no test_*.gz files; point {DATA_ENV} at the shared data folder")
    for path in paths:
        yield from read_lines(path)


def tatoeba_texts(root: Path) -> Iterator[str]:
    paths = sorted((root / "tatoeba_laser").glob("tatoeba.*-eng.*"))
    if not paths:
        raise DataError(
            f"{root / 'tatoeba_laser'}: no tatoeba files; point {DATA_ENV} at the shared data folder"
        )
    for path in paths:
        yield from read_lines(path)


def ag_news_texts(root: Path) -> Iterator[str]:
    path = required_file(root, "ag_news_test", "test.csv")
    for _, row in read_delimited(path, delimiter=",", fieldnames=("label", "title", "description")):
        title, description = row["title"] or "", row["description"] or ""
        yield from (title, description, f"{title} {description}")


# --------------------------------------------------------------------------------------------- text helpers


def pair_texts(pairs: Iterable[tuple[str, str] | ScoredPair | NliRow]) -> Iterator[str]:
    for pair in pairs:
        yield pair[0]
        yield pair[1]


def example_texts(examples: Iterable[Example]) -> Iterator[str]:
    for example in examples:
        yield example.query
        yield example.positive
        yield from example.negatives


def json_texts(path: Path, *fields: str) -> Iterator[str]:
    """The given string fields of every object of a JSON array file."""
    for item in read_json(path):
        yield from (item[f] for f in fields if isinstance(item.get(f), str))


def jsonl_texts(path: Path, *fields: str) -> Iterator[str]:
    for _, row in read_jsonl(path):
        yield from (row[f] for f in fields if isinstance(row.get(f), str))


LangText = tuple[str, str]  # (language, text)


def tagged(lang: str, texts: Iterable[str]) -> Iterator[LangText]:
    return ((lang, text) for text in texts)


def sts_tagged(root: Path, split: str, split_ja_zh: str) -> Iterator[LangText]:
    """(language, sentence) of one STS-B split in every language (JSTS and Chinese STS-B name it `split_ja_zh`)."""
    yield from tagged("en", pair_texts(stsbenchmark(root, split)))
    yield from tagged("ko", pair_texts(korsts(root, split)))
    for lang in ("en", *STSB_MT_LANGS):
        yield from tagged(lang, pair_texts(stsb_multi_mt(root, lang, split)))
    yield from tagged("ja", pair_texts(jsts(root, split_ja_zh)))
    yield from tagged("zh", pair_texts(zh_stsb(root, split_ja_zh)))


def msdocs_tagged(root: Path, split: str) -> Iterator[LangText]:
    """(language, sentence) of both sides of every MS-docs bitext of one split (dev / test)."""
    for lang in MSDOCS_LANGS:
        for side in ("en", lang):
            yield from tagged(side, required_lines(root, *MSDOCS, split, f"{lang}-en.{split}.{side}"))
