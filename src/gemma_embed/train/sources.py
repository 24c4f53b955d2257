"""Converters of the real data in `../shared/data` into training sets, and the held-out (evaluation) texts.

Every training set is registered by name with its task (hence prompts, see `gemma_embed.train.data`), the
languages of its query and document sides, and a licence note. `write_training_sets` converts the default
sets into `<name>.jsonl` files plus a `manifest.json` that `gemma_embed.train.data.load_training_sets` reads.

Evaluation data never reaches a training set: before writing, every query, positive and negative is checked
against the held-out texts (compared after NFKC, case folding and dropping everything but letters and
digits, so tokenized or lowercased copies are caught too):

- evaluation (never trained on): STS-B test in every language (English, the 10 stsb_multi_mt translations,
  KorSTS, JSTS, Chinese STS-B), SciFact test queries, Banking77 test, TwitterURLCorpus (all of
  castorini_data/twitterPPDB), Tatoeba (all), CoSQA retrieval test queries, the test texts of the
  classification/clustering sets (AG News, CLINC150, SNIPS validate, TweetEval), the mini-BEIR queries and
  the XQuAD questions (the README lists XQuAD, all of it, as an evaluation set);
- model selection (kept out of the default sets): STS-B dev in every language, SciFact train queries, CoSQA
  retrieval dev queries.

A set that is itself made of held-out texts (`stsb_dev`, `xquad_*`) is registered but not a default set;
it is exempt only from its own group. Other rules: only train splits are used where a dataset has one
(dev/test splits only where the snapshot has no train split and the dataset is not an evaluation set:
SNLI, KorNLI, JNLI, JSQuAD, the MS-docs bitext); STS pairs are positives when the score is >= 4;
pairs whose two sides are the same text after normalization are dropped, as are exact duplicates.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gemma_embed.errors import ConfigError, DataError
from gemma_embed.io.files import write_json
from gemma_embed.paths import DATA_ENV
from gemma_embed.paths import data_root as default_data_root
from gemma_embed.train.data import (
    MANIFEST,
    Example,
    PairDataset,
    location,
    prompts_for,
    read_delimited,
    read_json,
    read_jsonl,
    read_lines,
    stable_id,
    write_jsonl,
)

STS_POSITIVE_SCORE = 4.0
STSB_MT_LANGS = ("de", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh")
XQUAD_LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
MULTI30K_LANGS = ("de", "fr", "cs")
MSDOCS_LANGS = ("da", "lv", "no", "zh")
_U64 = (1 << 64) - 1
_CODE_SEARCH = ("codexglue", "Text-Code", "NL-code-search-WebQuery")
_JAVA_CS = ("codexglue", "Code-Code", "code-to-code-trans", "data")
_MSDOCS = ("codexglue", "Text-Text", "text-to-text", "data")


# --------------------------------------------------------------------------------------------- paths


def _file(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts)
    if not path.is_file():
        raise DataError(f"{path}: missing; point {DATA_ENV} at the shared data folder")
    return path


def _lines(root: Path, *parts: str) -> list[str]:
    """The lines of a required line-aligned file."""
    return read_lines(_file(root, *parts))


# --------------------------------------------------------------------------------------------- text keys


def text_key(text: str) -> str:
    """Comparison key for leak checks: NFKC, case-folded, letters and digits only (any script)."""
    return "".join(filter(str.isalnum, unicodedata.normalize("NFKC", text).casefold()))


# --------------------------------------------------------------------------------------------- file layouts

ScoredPair = tuple[str, str, float]


def _cell(row: dict[str, Any], column: str, path: Path, number: int) -> str:
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
        yield _cell(row, "sentence1", path, n), _cell(row, "sentence2", path, n), value


_STSB_FIELDS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
_PAIR_FIELDS = ("sentence1", "sentence2", "score")


def _stsbenchmark(root: Path, split: str) -> Iterator[ScoredPair]:
    """English STS-B: TSV without header (genre, file, year, id, score, s1, s2[, sources])."""
    path = _file(root, "stsbenchmark", f"sts-{split}.csv")
    return _scored(path, read_delimited(path, delimiter="\t", fieldnames=_STSB_FIELDS))


def _stsb_multi_mt(root: Path, lang: str, split: str) -> Iterator[ScoredPair]:
    """stsb_multi_mt: CSV without header (s1, s2, score)."""
    path = _file(root, "stsb_multi_mt", "data", f"stsb-{lang}-{split}.csv")
    return _scored(path, read_delimited(path, delimiter=",", fieldnames=_PAIR_FIELDS))


def _korsts(root: Path, split: str) -> Iterator[ScoredPair]:
    """KorSTS: TSV with the STS-B header."""
    path = _file(root, "korsts", f"sts-{split}.tsv")
    return _scored(path, read_delimited(path, delimiter="\t"))


def _jsts(root: Path, split: str) -> Iterator[ScoredPair]:
    """JGLUE JSTS: JSON lines with sentence1, sentence2, label (0-5)."""
    path = _file(root, "jglue", "jsts-v1.3", f"{split}-v1.3.json")
    return _scored(path, read_jsonl(path), score="label")


def _zh_stsb(root: Path, split: str) -> Iterator[ScoredPair]:
    """text2vec Chinese STS-B: TSV without header (s1, s2, integer score)."""
    path = _file(root, "text2vec_zh", "STS-B", f"STS-B.{split}.data")
    return _scored(path, read_delimited(path, delimiter="\t", fieldnames=_PAIR_FIELDS))


NliRow = tuple[str, str, str]  # premise, hypothesis, label


def _labelled(path: Path, rows: Iterable[tuple[int, dict[str, Any]]], label: str) -> Iterator[NliRow]:
    """(sentence1, sentence2, label) of table rows with those column names."""
    for n, row in rows:
        yield _cell(row, "sentence1", path, n), _cell(row, "sentence2", path, n), str(row.get(label))


def _nli_jsonl(path: Path) -> Iterator[NliRow]:
    """OCNLI / JNLI: JSON lines with sentence1, sentence2, label."""
    return _labelled(path, read_jsonl(path), "label")


def _kornli(path: Path) -> Iterator[NliRow]:
    """KorNLI: TSV with header sentence1, sentence2, gold_label."""
    return _labelled(path, read_delimited(path, delimiter="\t"), "gold_label")


def _snli(root: Path, split: str) -> Iterator[NliRow]:
    """SNLI from e-SNLI: line-aligned s1 (premise), s2 (hypothesis), labels."""
    folder = "snli_devtest_esnli"
    columns = [_lines(root, folder, f"{name}.{split}") for name in ("s1", "s2", "labels")]
    if len({len(c) for c in columns}) != 1:
        raise DataError(f"{root / folder}: s1/s2/labels.{split} have different line counts")
    yield from zip(*columns, strict=True)


def _squad(path: Path) -> Iterator[tuple[str, str]]:
    """(question, paragraph) of a SQuAD-format JSON file (XQuAD, JSQuAD)."""
    for article in read_json(path)["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield qa["question"], paragraph["context"]


def _aligned(path_a: Path, path_b: Path) -> Iterator[tuple[str, str]]:
    """Line pairs of two line-aligned files."""
    a, b = read_lines(path_a), read_lines(path_b)
    if len(a) != len(b):
        raise DataError(f"{path_a} and {path_b} should be line-aligned but have {len(a)} and {len(b)} lines")
    yield from zip(a, b, strict=True)


def _banking77(root: Path, split: str) -> Iterator[tuple[str, str]]:
    """(utterance, intent) of Banking77 (CSV text,category)."""
    path = _file(root, "banking77", f"{split}.csv")
    for n, row in read_delimited(path, delimiter=","):
        yield _cell(row, "text", path, n), _cell(row, "category", path, n)


def _clinc150(root: Path, splits: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(utterance, intent) of CLINC150 data_full.json splits."""
    data = read_json(_file(root, "clinc150", "data", "data_full.json"))
    for split in splits:
        yield from ((text, intent) for text, intent in data[split])


def _snips(root: Path, kind: str) -> Iterator[tuple[str, str]]:
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


def _tweeteval_texts(root: Path, split: str) -> Iterator[str]:
    """Tweets of every TweetEval task for a split (train/val/test); the sentiment train file is absent."""
    for path in sorted((root / "tweeteval").glob(f"**/{split}_text.txt")):
        yield from read_lines(path)


def _scifact_queries(root: Path, split: str) -> Iterator[str]:
    """SciFact claims of the queries judged in qrels/<split>.tsv."""
    qrels = _file(root, "scifact", "qrels", f"{split}.tsv")
    ids = {row["query-id"].strip() for _, row in read_delimited(qrels, delimiter="\t")}
    path = _file(root, "scifact", "queries.jsonl")
    for n, row in read_jsonl(path):
        if str(row.get("_id")) in ids:
            yield _cell(row, "text", path, n)


def _beir_texts(path: Path) -> Iterator[str]:
    """Title, newline, text of each row of a BEIR corpus.jsonl (text alone without a title; queries.jsonl)."""
    for n, row in read_jsonl(path):
        text = _cell(row, "text", path, n)
        title = (row.get("title") or "").strip()
        yield f"{title}\n{text}" if title else text


def _cosqa_queries(root: Path, split: str) -> Iterator[str]:
    for item in read_json(_file(root, "cosqa", f"cosqa-retrieval-{split}-500.json")):
        yield item["doc"]


def _twitter_url_texts(root: Path) -> Iterator[str]:
    base = root / "castorini_data" / "twitterPPDB"
    for split in ("train", "test"):
        for side in ("a.toks", "b.toks"):
            yield from _lines(base, split, side)
    raw = _file(base, "Twitter_URL_Corpus_testNew.larger.txt")
    for _, row in read_delimited(raw, delimiter="\t", fieldnames=("s1", "s2", "votes", "url")):
        yield from (row[k] for k in ("s1", "s2") if row[k])


def _tatoeba_texts(root: Path) -> Iterator[str]:
    paths = sorted((root / "tatoeba_laser").glob("tatoeba.*-eng.*"))
    if not paths:
        raise DataError(
            f"{root / 'tatoeba_laser'}: no tatoeba files; point {DATA_ENV} at the shared data folder"
        )
    for path in paths:
        yield from read_lines(path)


def _ag_news_texts(root: Path) -> Iterator[str]:
    path = _file(root, "ag_news_test", "test.csv")
    for _, row in read_delimited(path, delimiter=",", fieldnames=("label", "title", "description")):
        title, description = row["title"] or "", row["description"] or ""
        yield from (title, description, f"{title} {description}")


# --------------------------------------------------------------------------------------------- text helpers


def _pair_texts(pairs: Iterable[tuple[str, str] | ScoredPair | NliRow]) -> Iterator[str]:
    for pair in pairs:
        yield pair[0]
        yield pair[1]


def _example_texts(examples: Iterable[Example]) -> Iterator[str]:
    for example in examples:
        yield example.query
        yield example.positive
        yield from example.negatives


def _json_texts(path: Path, *fields: str) -> Iterator[str]:
    """The given string fields of every object of a JSON array file."""
    for item in read_json(path):
        yield from (item[f] for f in fields if isinstance(item.get(f), str))


def _jsonl_texts(path: Path, *fields: str) -> Iterator[str]:
    for _, row in read_jsonl(path):
        yield from (row[f] for f in fields if isinstance(row.get(f), str))


LangText = tuple[str, str]  # (language, text)


def _tagged(lang: str, texts: Iterable[str]) -> Iterator[LangText]:
    return ((lang, text) for text in texts)


# --------------------------------------------------------------------------------------------- held-out texts


@dataclass(frozen=True)
class HeldOutGroup:
    """Texts of one evaluation or model-selection split, as `text_key`s."""

    name: str
    kind: str  # "evaluation" | "selection"
    keys: frozenset[str]


def _sts_tagged(root: Path, split: str, split_ja_zh: str) -> Iterator[LangText]:
    """(language, sentence) of one STS-B split in every language (JSTS and Chinese STS-B name it `split_ja_zh`)."""
    yield from _tagged("en", _pair_texts(_stsbenchmark(root, split)))
    yield from _tagged("ko", _pair_texts(_korsts(root, split)))
    for lang in ("en", *STSB_MT_LANGS):
        yield from _tagged(lang, _pair_texts(_stsb_multi_mt(root, lang, split)))
    yield from _tagged("ja", _pair_texts(_jsts(root, split_ja_zh)))
    yield from _tagged("zh", _pair_texts(_zh_stsb(root, split_ja_zh)))


_HELD_OUT: dict[str, tuple[str, Callable[[Path], Iterable[str]]]] = {
    "stsb-test": ("evaluation", lambda r: (text for _, text in _sts_tagged(r, "test", "test"))),
    "scifact-test-queries": ("evaluation", lambda r: _scifact_queries(r, "test")),
    "banking77-test": ("evaluation", lambda r: (text for text, _ in _banking77(r, "test"))),
    "twitter-url-corpus": ("evaluation", _twitter_url_texts),
    "tatoeba": ("evaluation", _tatoeba_texts),
    "cosqa-test-queries": ("evaluation", lambda r: _cosqa_queries(r, "test")),
    "classification-test": (
        "evaluation",
        lambda r: [
            *(text for text, _ in _clinc150(r, ("test", "oos_test"))),
            *(text for text, _ in _snips(r, "validate")),
            *_ag_news_texts(r),
            *_tweeteval_texts(r, "test"),
        ],
    ),
    "mini-beir-queries": (
        "evaluation",
        lambda r: [
            t
            for name in ("msmarco", "dbpedia", "arcd")
            for t in _beir_texts(_file(r, "mini_beir_agentset", name, "queries.jsonl"))
        ],
    ),
    "xquad-questions": (
        "evaluation",
        lambda r: [q for lang in XQUAD_LANGS for q, _ in _squad(_file(r, "xquad", f"xquad.{lang}.json"))],
    ),
    "stsb-dev": ("selection", lambda r: (text for _, text in _sts_tagged(r, "dev", "valid"))),
    "scifact-train-queries": ("selection", lambda r: _scifact_queries(r, "train")),
    "cosqa-dev-queries": ("selection", lambda r: _cosqa_queries(r, "dev")),
}


class HeldOut:
    """All held-out groups of a data root; `blocked(exempt)` is the union of every group not exempted."""

    def __init__(self, groups: Iterable[HeldOutGroup]) -> None:
        self.groups = {group.name: group for group in groups}
        self._unions: dict[frozenset[str], frozenset[str]] = {}

    def blocked(self, exempt: Iterable[str] = ()) -> frozenset[str]:
        skip = frozenset(exempt)
        if skip not in self._unions:
            keys: set[str] = set()
            for group in self.groups.values():
                if group.name not in skip:
                    keys |= group.keys
            self._unions[skip] = frozenset(keys)
        return self._unions[skip]

    def contains(self, text: str, exempt: Iterable[str] = ()) -> bool:
        """True when `text` (by `text_key`) is held out and not exempted."""
        key = text_key(text)
        return bool(key) and key in self.blocked(exempt)


@functools.cache
def held_out(data_root: Path | None = None) -> HeldOut:
    """The held-out groups read from the data root (cached per root)."""
    root = data_root or default_data_root()
    groups = []
    for name, (kind, reader) in _HELD_OUT.items():
        keys = frozenset(key for key in map(text_key, reader(root)) if key)
        groups.append(HeldOutGroup(name=name, kind=kind, keys=keys))
    return HeldOut(groups)


# --------------------------------------------------------------------------------------------- example builders


def _sts_examples(pairs: Iterable[ScoredPair]) -> Iterator[Example]:
    for s1, s2, score in pairs:
        if score >= STS_POSITIVE_SCORE:
            yield Example(s1, s2)


_ENTAILMENT, _CONTRADICTION = "entailment", "contradiction"


def _nli_examples(rows: Iterable[NliRow]) -> Iterator[Example]:
    """(premise, entailed hypothesis, contradicting hypotheses of the same premise as hard negatives)."""
    by_premise: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for premise, hypothesis, label in rows:
        by_premise[premise.strip()][label.strip()].append(hypothesis)
    for premise, labels in by_premise.items():
        for hypothesis in labels.get(_ENTAILMENT, []):
            yield Example(premise, hypothesis, tuple(labels.get(_CONTRADICTION, [])))


def _same_label_pairs(items: Iterable[tuple[str, str]], group: str) -> Iterator[Example]:
    """Each utterance paired with another utterance of the same label (a seeded cycle per label).

    Both ids are the label, so same-label examples in one batch are never negatives of each other.
    """
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in items:
        by_label[label].append(text)
    for label, texts in sorted(by_label.items()):
        unique = list(dict.fromkeys(t.strip() for t in texts))
        if len(unique) < 2:
            continue
        key = f"{group}:{label}"
        order = np.random.default_rng(stable_id(key) & _U64).permutation(len(unique))
        for i, j in zip(order, np.roll(order, -1), strict=True):
            yield Example(unique[i], unique[j], query_key=key, positive_key=key)


def _caption_pairs(root: Path) -> Iterator[Example]:
    """Flickr8k: consecutive captions of one image (cyclic), with the image as both ids."""
    path = _file(root, "flickr8k_captions", "Flickr8k.token.txt")
    by_image: dict[str, list[str]] = defaultdict(list)
    for n, line in enumerate(read_lines(path), start=1):
        name, sep, caption = line.partition("\t")
        if not sep:
            raise DataError(f"{location(path, n)}: expected 'image#k<TAB>caption'")
        by_image[name.split("#")[0]].append(caption)
    for image, captions in by_image.items():
        key = f"flickr8k:{image}"
        for a, b in zip(captions, captions[1:] + captions[:1], strict=True):
            yield Example(a, b, query_key=key, positive_key=key)


def _wikiqa(root: Path) -> Iterator[Example]:
    """WikiQA train: question -> correct answer sentence; the wrong candidates are hard negatives."""
    base = root / "castorini_data" / "WikiQA" / "train"
    columns = [_lines(base, name) for name in ("id.txt", "a.toks", "b.toks", "sim.txt")]
    if len({len(c) for c in columns}) != 1:
        raise DataError(f"{base}: id/a/b/sim files have different line counts")
    grouped: dict[str, tuple[str, list[str], list[str]]] = {}
    for qid, question, sentence, sim in zip(*columns, strict=True):
        entry = grouped.setdefault(qid, (question, [], []))
        (entry[1] if sim.strip() == "1" else entry[2]).append(sentence)
    for question, positives, negatives in grouped.values():
        for positive in positives:
            yield Example(question, positive, tuple(negatives))


def _climate_fever(root: Path) -> Iterator[Example]:
    """Claim -> evidence sentences labelled SUPPORTS/REFUTES; NOT_ENOUGH_INFO ones are hard negatives."""
    path = _file(root, "climate_fever", "climate-fever.jsonl")
    for _, row in read_jsonl(path):
        evidences = row["evidences"]
        negatives = tuple(e["evidence"] for e in evidences if e["evidence_label"] == "NOT_ENOUGH_INFO")
        for evidence in evidences:
            if evidence["evidence_label"] != "NOT_ENOUGH_INFO":
                yield Example(row["claim"], evidence["evidence"], negatives)


def _pubmedqa(root: Path) -> Iterator[Example]:
    for item in read_json(_file(root, "pubmedqa", "ori_pqal.json")).values():
        yield Example(item["QUESTION"], " ".join(item["CONTEXTS"]))


def _conala(root: Path) -> Iterator[Example]:
    """CoNaLa train (English): the rewritten intent (else the raw intent) -> snippet."""
    for item in read_json(_file(root, "conala", "mconala", "dataset", "train", "train.json")):
        yield Example(item.get("rewritten_intent") or item["intent"], item["snippet"])


def _django(root: Path) -> Iterator[Example]:
    base = root / "django_code"
    for annotation, code in _aligned(_file(base, "all.anno"), _file(base, "all.code")):
        yield Example(annotation, code)


def _cosqa_dev_pairs(root: Path) -> Iterator[Example]:
    """CodeXGLUE CoSQA dev: web query -> Python function, pairs labelled relevant (1)."""
    for item in read_json(_file(root, *_CODE_SEARCH, "CoSQA", "cosqa-dev.json")):
        if item["label"] == 1:
            yield Example(item["doc"], item["code"])


def _java_cs(root: Path) -> Iterator[Example]:
    base = root.joinpath(*_JAVA_CS)
    for java, cs in _aligned(_file(base, "train.java-cs.txt.java"), _file(base, "train.java-cs.txt.cs")):
        yield Example(java, cs)


def _msdocs_bitext(root: Path, lang: str) -> Iterator[Example]:
    base = root.joinpath(*_MSDOCS)
    for split in ("dev", "test"):
        name = f"{lang}-en.{split}"
        for english, other in _aligned(
            _file(base, split, f"{name}.en"), _file(base, split, f"{name}.{lang}")
        ):
            yield Example(english, other)


def _multi30k(root: Path, lang: str) -> Iterator[Example]:
    base = root / "multi30k" / "data" / "task1" / "raw"
    for english, other in _aligned(_file(base, "train.en.gz"), _file(base, f"train.{lang}.gz")):
        yield Example(english, other)


def _stsb_bitext(root: Path, lang: str) -> Iterator[Example]:
    """English STS-B train sentences -> their stsb_multi_mt translation."""
    for (e1, e2, _), (t1, t2, _) in zip(
        _stsb_multi_mt(root, "en", "train"), _stsb_multi_mt(root, lang, "train"), strict=True
    ):
        yield Example(e1, t1)
        yield Example(e2, t2)


def _stsb_mt_pairs(root: Path, lang: str) -> Iterator[Example]:
    return _sts_examples(_stsb_multi_mt(root, lang, "train"))


def _xquad(root: Path, lang: str) -> Iterator[Example]:
    for question, paragraph in _squad(_file(root, "xquad", f"xquad.{lang}.json")):
        yield Example(question, paragraph)


def _bge_zh(root: Path) -> Iterator[Example]:
    path = _file(root, "text2vec_zh", "bge_finetune_data.jsonl")
    for n, row in read_jsonl(path):
        query = _cell(row, "query", path, n)
        for positive in row.get("pos") or []:
            yield Example(query, positive, tuple(row.get("neg") or []))


# --------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Source:
    """A registered training set."""

    name: str
    task: str
    query_lang: str
    doc_lang: str
    licence: str
    description: str
    convert: Callable[[Path], Iterable[Example]]
    default: bool = True
    exempt: tuple[str, ...] = ()  # held-out groups this (non-default) set is made of

    @property
    def prompts(self) -> tuple[str, str]:
        return prompts_for(self.task)


SOURCES: dict[str, Source] = {}


def _add(
    name: str,
    convert: Callable[[Path], Iterable[Example]],
    *,
    task: str,
    lang: str,
    licence: str,
    description: str,
    doc_lang: str | None = None,
    default: bool = True,
    exempt: tuple[str, ...] = (),
) -> None:
    if name in SOURCES:
        raise ConfigError(f"training set {name!r} registered twice")
    if default and exempt:
        raise ConfigError(f"default training set {name!r} cannot be exempt from held-out groups")
    prompts_for(task)
    SOURCES[name] = Source(
        name, task, lang, doc_lang or lang, licence, description, convert, default=default, exempt=exempt
    )


_STS_LICENCE = "STS-B: scores CC BY-SA 4.0, texts under per-source licences (see stsbenchmark/LICENSE.txt)"
_add(
    "stsb_train",
    lambda r: _sts_examples(_stsbenchmark(r, "train")),
    task="sentence_similarity",
    lang="en",
    licence=_STS_LICENCE,
    description="STS-B train pairs with score >= 4",
)
_add(
    "stsb_dev",
    lambda r: _sts_examples(_stsbenchmark(r, "dev")),
    task="sentence_similarity",
    lang="en",
    licence=_STS_LICENCE,
    description="STS-B dev pairs with score >= 4 (model selection: not a default set)",
    default=False,
    exempt=("stsb-dev",),
)
for _lang in STSB_MT_LANGS:
    _add(
        f"stsb_mt_{_lang}",
        functools.partial(_stsb_mt_pairs, lang=_lang),
        task="sentence_similarity",
        lang=_lang,
        licence=_STS_LICENCE + "; DeepL translations (stsb_multi_mt)",
        description=f"stsb_multi_mt {_lang} train pairs with score >= 4",
    )
    _add(
        f"stsb_bitext_{_lang}",
        functools.partial(_stsb_bitext, lang=_lang),
        task="bitext",
        lang="en",
        doc_lang=_lang,
        licence=_STS_LICENCE + "; DeepL translations (stsb_multi_mt)",
        description=f"English STS-B train sentence -> its {_lang} translation",
    )
_add(
    "korsts",
    lambda r: _sts_examples(_korsts(r, "train")),
    task="sentence_similarity",
    lang="ko",
    licence="CC BY-SA 4.0 (KorNLUDatasets)",
    description="KorSTS train pairs with score >= 4",
)
_add(
    "jsts",
    lambda r: _sts_examples(_jsts(r, "train")),
    task="sentence_similarity",
    lang="ja",
    licence="CC BY-SA 4.0 (JGLUE)",
    description="JGLUE JSTS train pairs with score >= 4",
)
_add(
    "zh_stsb",
    lambda r: _sts_examples(_zh_stsb(r, "train")),
    task="sentence_similarity",
    lang="zh",
    licence="Apache-2.0 repo; STS-B CC BY-SA 4.0",
    description="Chinese STS-B (text2vec) train pairs, score >= 4",
)
_add(
    "text2vec_zh",
    _bge_zh,
    task="sentence_similarity",
    lang="zh",
    licence="Apache-2.0 repo; STS-B CC BY-SA 4.0",
    description="text2vec bge_finetune_data: Chinese query -> positive with mined hard negatives",
)
_add(
    "snli",
    lambda r: _nli_examples(row for split in ("dev", "test") for row in _snli(r, split)),
    task="sentence_similarity",
    lang="en",
    licence="SNLI CC BY-SA 4.0; e-SNLI MIT",
    description="SNLI dev+test: premise -> entailment, contradictions as hard negatives",
)
_add(
    "ocnli",
    lambda r: _nli_examples(_nli_jsonl(_file(r, "ocnli", "train.10k.json"))),
    task="sentence_similarity",
    lang="zh",
    licence="CC BY-NC 2.0 (non-commercial)",
    description="OCNLI train.10k: premise -> entailment, contradictions as hard negatives",
)
_add(
    "kornli",
    lambda r: _nli_examples(
        row for s in ("dev", "test") for row in _kornli(_file(r, "kornli_xnli", f"xnli.{s}.ko.tsv"))
    ),
    task="sentence_similarity",
    lang="ko",
    licence="CC BY-SA 4.0 (KorNLUDatasets)",
    description="KorNLI (XNLI dev+test): premise -> entailment, contradictions as hard negatives",
)
_add(
    "jnli",
    lambda r: _nli_examples(
        row for s in ("valid", "test") for row in _nli_jsonl(_file(r, "jglue", "jnli-v1.3", f"{s}-v1.3.json"))
    ),
    task="sentence_similarity",
    lang="ja",
    licence="CC BY-SA 4.0 (JGLUE)",
    description="JGLUE JNLI valid+test: premise -> entailment, contradictions as hard negatives",
)
_add(
    "flickr8k",
    _caption_pairs,
    task="sentence_similarity",
    lang="en",
    licence="research use (UIUC Flickr8k text)",
    description="Flickr8k: caption -> another caption of the image",
)
for _lang in MULTI30K_LANGS:
    _add(
        f"multi30k_{_lang}",
        functools.partial(_multi30k, lang=_lang),
        task="bitext",
        lang="en",
        doc_lang=_lang,
        licence="research use (Multi30k / Flickr30k captions)",
        description=f"Multi30k train: English caption -> {_lang}",
    )
for _lang in MSDOCS_LANGS:
    _add(
        f"msdocs_bitext_{_lang}",
        functools.partial(_msdocs_bitext, lang=_lang),
        task="bitext",
        lang="en",
        doc_lang=_lang,
        licence="C-UDA (CodeXGLUE data)",
        description=f"CodeXGLUE MS-docs dev+test: English -> {_lang}",
    )
_add(
    "wikiqa",
    _wikiqa,
    task="question_answering",
    lang="en",
    licence="Microsoft Research Data License (research)",
    description="WikiQA train: question -> answer sentence, wrong candidates as hard negatives",
)
_add(
    "pubmedqa",
    _pubmedqa,
    task="question_answering",
    lang="en",
    licence="MIT",
    description="PubMedQA-L: question -> abstract contexts",
)
_add(
    "climate_fever",
    _climate_fever,
    task="fact_checking",
    lang="en",
    licence="no licence stated (cite Diggelmann et al. 2020); Wikipedia CC BY-SA",
    description="CLIMATE-FEVER: claim -> supporting/refuting evidence, NOT_ENOUGH_INFO as hard negatives",
)
_add(
    "jsquad",
    lambda r: (
        Example(q, p)
        for s in ("valid", "test")
        for q, p in _squad(_file(r, "jglue", "jsquad-v1.3", f"{s}-v1.3.json"))
    ),
    task="question_answering",
    lang="ja",
    licence="CC BY-SA 4.0 (JGLUE)",
    description="JGLUE JSQuAD valid+test: question -> paragraph",
)
for _lang in XQUAD_LANGS:
    _add(
        f"xquad_{_lang}",
        functools.partial(_xquad, lang=_lang),
        task="question_answering",
        lang=_lang,
        licence="CC BY-SA 4.0",
        description=f"XQuAD {_lang}: question -> paragraph (an evaluation set: not a default set)",
        default=False,
        exempt=("xquad-questions",),
    )
_add(
    "conala",
    _conala,
    task="code_retrieval",
    lang="en",
    doc_lang="code",
    licence="CC BY-SA 4.0 (StackOverflow)",
    description="CoNaLa train: intent -> Python snippet",
)
_add(
    "django",
    _django,
    task="code_retrieval",
    lang="en",
    doc_lang="code",
    licence="MIT",
    description="Django: pseudo-code annotation -> Python line",
)
_add(
    "cosqa_dev",
    _cosqa_dev_pairs,
    task="code_retrieval",
    lang="en",
    doc_lang="code",
    licence="C-UDA (CodeXGLUE data)",
    description="CodeXGLUE CoSQA dev (604 labelled pairs): web query -> relevant Python function",
)
_add(
    "java_cs",
    _java_cs,
    task="code_retrieval",
    lang="code",
    licence="C-UDA (CodeXGLUE data)",
    description="CodeXGLUE code-to-code train: Java function -> C# translation",
)
_add(
    "banking77",
    lambda r: _same_label_pairs(_banking77(r, "train"), "banking77"),
    task="classification",
    lang="en",
    licence="CC BY 4.0",
    description="Banking77 train: utterance -> utterance of the same intent",
)
_add(
    "clinc150",
    lambda r: _same_label_pairs(_clinc150(r, ("train",)), "clinc150"),
    task="classification",
    lang="en",
    licence="CC BY 3.0",
    description="CLINC150 train (in-scope): utterance -> utterance of the same intent",
)
_add(
    "snips",
    lambda r: _same_label_pairs(_snips(r, "train"), "snips"),
    task="classification",
    lang="en",
    licence="CC0 1.0",
    description="SNIPS train_full: utterance -> utterance of the same intent",
)


# --------------------------------------------------------------------------------------------- raw text


def _raw_sts(root: Path) -> Iterator[LangText]:
    for split, split_ja_zh in (("train", "train"), ("dev", "valid"), ("test", "test")):
        yield from _sts_tagged(root, split, split_ja_zh)


def _raw_nli(root: Path) -> Iterator[LangText]:
    for split in ("dev", "test"):
        for name in ("s1", "s2", "preproc1_expl_1"):  # premise, hypothesis, human explanation
            yield from _tagged("en", _lines(root, "snli_devtest_esnli", f"{name}.{split}"))
        yield from _tagged("ko", _pair_texts(_kornli(_file(root, "kornli_xnli", f"xnli.{split}.ko.tsv"))))
    for name in ("train.10k", "dev", "test"):
        yield from _tagged("zh", _pair_texts(_nli_jsonl(_file(root, "ocnli", f"{name}.json"))))
    for split in ("valid", "test"):
        yield from _tagged(
            "ja", _pair_texts(_nli_jsonl(_file(root, "jglue", "jnli-v1.3", f"{split}-v1.3.json")))
        )


def _raw_qa(root: Path) -> Iterator[LangText]:
    for split in ("valid", "test"):
        yield from _tagged(
            "ja", _pair_texts(_squad(_file(root, "jglue", "jsquad-v1.3", f"{split}-v1.3.json")))
        )
    for lang in XQUAD_LANGS:  # the questions are held out; the paragraphs are documents
        yield from _tagged(lang, _pair_texts(_squad(_file(root, "xquad", f"xquad.{lang}.json"))))
    for split in ("train", "dev", "test"):
        for name in ("a.toks", "b.toks"):
            yield from _tagged("en", _lines(root, "castorini_data", "WikiQA", split, name))
    for item in read_json(_file(root, "pubmedqa", "ori_pqal.json")).values():
        yield from _tagged("en", (item["QUESTION"], *item["CONTEXTS"], item["LONG_ANSWER"]))
    for _, row in read_jsonl(_file(root, "climate_fever", "climate-fever.jsonl")):
        yield from _tagged("en", (row["claim"], *(e["evidence"] for e in row["evidences"])))


def _raw_captions(root: Path) -> Iterator[LangText]:
    yield from _tagged("en", _example_texts(_caption_pairs(root)))
    raw = root / "multi30k" / "data" / "task1" / "raw"
    for lang in ("en", *MULTI30K_LANGS):
        for path in sorted(raw.glob(f"*.{lang}.gz")):
            yield from _tagged(lang, read_lines(path))


def _raw_bitext(root: Path) -> Iterator[LangText]:
    for lang in MSDOCS_LANGS:
        for split in ("dev", "test"):
            for side in ("en", lang):
                yield from _tagged(side, _lines(root, *_MSDOCS, split, f"{lang}-en.{split}.{side}"))


def _raw_code(root: Path) -> Iterator[LangText]:
    conala_train = _file(root, "conala", "mconala", "dataset", "train", "train.json")
    conala_test = _file(root, "conala", "conala_test_500.json")
    yield from _tagged("en", _json_texts(conala_train, "intent", "rewritten_intent"))
    yield from _tagged("en", _json_texts(conala_test, "intent"))
    yield from _tagged("code", _json_texts(conala_train, "snippet"))
    yield from _tagged("code", _json_texts(conala_test, "code"))
    for lang in ("es", "ja", "ru"):
        mconala = _file(root, "conala", "mconala", "dataset", "test", f"{lang}_test.json")
        yield from _tagged(lang, _json_texts(mconala, "intent", "rewritten_intent"))
        yield from _tagged("code", _json_texts(mconala, "snippet"))
    yield from _tagged("en", _lines(root, "django_code", "all.anno"))
    yield from _tagged("code", _lines(root, "django_code", "all.code"))
    for parts in (("CoSQA", "cosqa-dev.json"), ("data", "test_webquery.json")):
        path = _file(root, *_CODE_SEARCH, *parts)
        yield from _tagged("en", _json_texts(path, "doc"))
        yield from _tagged("code", _json_texts(path, "code"))
    yield from _tagged("code", read_json(_file(root, "cosqa", "code_idx_map.txt")))  # CoSQA's code corpus
    for split in ("train", "valid", "test"):
        for side in ("java", "cs"):
            yield from _tagged("code", _lines(root, *_JAVA_CS, f"{split}.java-cs.txt.{side}"))


def _raw_classification(root: Path) -> Iterator[LangText]:
    yield from _tagged("en", (text for text, _ in _banking77(root, "train")))
    yield from _tagged("en", (text for text, _ in _clinc150(root, ("train", "val", "oos_train", "oos_val"))))
    yield from _tagged("en", (text for text, _ in _snips(root, "train")))
    for split in ("train", "val"):
        yield from _tagged("en", _tweeteval_texts(root, split))


def _raw_chinese(root: Path) -> Iterator[LangText]:
    yield from _tagged("zh", _example_texts(_bge_zh(root)))
    for name in ("dc", "dd"):
        path = _file(root, "text2vec_zh", "SOHU", f"{name}-test.jsonl")
        yield from _tagged("zh", _jsonl_texts(path, "sentence1", "sentence2"))


def _raw_documents(root: Path) -> Iterator[LangText]:
    yield from _tagged("en", _beir_texts(_file(root, "scifact", "corpus.jsonl")))
    for name, lang in (("msmarco", "en"), ("dbpedia", "en"), ("arcd", "ar")):
        yield from _tagged(lang, _beir_texts(_file(root, "mini_beir_agentset", name, "corpus.jsonl")))


# Source group -> reader of (language, text) of every split of its files. Evaluation-only files (Tatoeba,
# TwitterURLCorpus, AG News test, Banking77 test, the SciFact / mini-BEIR queries) are not read; the held-out
# texts of the other files (dev/test of evaluation sets) are removed by the corpus builder. TrecQA
# (tokenized pseudo-XML, ~1.5k sentences) is not read.
RAW_TEXTS: dict[str, Callable[[Path], Iterator[LangText]]] = {
    "sts": _raw_sts,
    "nli": _raw_nli,
    "qa": _raw_qa,
    "captions": _raw_captions,
    "bitext": _raw_bitext,
    "code": _raw_code,
    "classification": _raw_classification,
    "chinese": _raw_chinese,
    "documents": _raw_documents,
}


def raw_texts(data_root: Path | None = None) -> Iterator[tuple[str, str, str]]:
    """(source group, language, text) of all text in the shared data, held-out texts NOT yet removed.

    Languages are ISO 639-1 codes, or "code" for source code.
    """
    root = data_root or default_data_root()
    for source, reader in RAW_TEXTS.items():
        for lang, text in reader(root):
            yield source, lang, text


# --------------------------------------------------------------------------------------------- conversion


@dataclass
class ConversionStats:
    """What happened to the rows of one training set."""

    read: int = 0
    written: int = 0
    held_out: int = 0  # query or positive is a held-out text
    trivial: int = 0  # query and positive are the same text
    duplicate: int = 0
    negatives_removed: int = 0  # held-out or trivial negatives dropped from kept rows


def _clean(
    examples: Iterable[Example], held: HeldOut, exempt: tuple[str, ...], stats: ConversionStats
) -> Iterator[Example]:
    blocked = held.blocked(exempt)
    seen: set[tuple[str, str]] = set()
    for example in examples:
        stats.read += 1
        query, positive = example.query.strip(), example.positive.strip()
        q_key, p_key = text_key(query), text_key(positive)
        if (q_key and q_key in blocked) or (p_key and p_key in blocked):
            stats.held_out += 1
            continue
        if q_key == p_key:
            stats.trivial += 1
            continue
        if (query, positive) in seen:
            stats.duplicate += 1
            continue
        seen.add((query, positive))
        negatives = []
        for negative in dict.fromkeys(n.strip() for n in example.negatives):
            key = text_key(negative)
            if not key or key in blocked or key in (q_key, p_key):
                stats.negatives_removed += 1
            else:
                negatives.append(negative)
        stats.written += 1
        yield Example(query, positive, tuple(negatives), example.query_key, example.positive_key)


def convert(name: str, data_root: Path | None = None) -> tuple[list[Example], ConversionStats]:
    """The cleaned examples of one registered training set and what was dropped."""
    if name not in SOURCES:
        raise ConfigError(f"unknown training set {name!r}; known: {', '.join(SOURCES)}")
    root = data_root or default_data_root()
    source, stats = SOURCES[name], ConversionStats()
    examples = list(_clean(source.convert(root), held_out(root), source.exempt, stats))
    return examples, stats


def load_source(name: str, data_root: Path | None = None) -> PairDataset:
    """A registered training set converted in memory, as a `PairDataset` with its task's prompts."""
    examples, _ = convert(name, data_root)
    query_prompt, document_prompt = SOURCES[name].prompts
    return PairDataset(examples, name=name, query_prompt=query_prompt, document_prompt=document_prompt)


def default_sets() -> list[str]:
    """Names of the default training sets (no evaluation or model-selection data)."""
    return [name for name, source in SOURCES.items() if source.default]


def write_training_sets(
    out_dir: str | os.PathLike[str], names: Iterable[str] | None = None, data_root: Path | None = None
) -> dict[str, int]:
    """Write `<name>.jsonl` for each set (default: `default_sets()`) and `manifest.json`; returns row counts."""
    out = Path(out_dir)
    chosen = list(names) if names is not None else default_sets()
    entries: dict[str, dict[str, Any]] = {}
    for name in tqdm(chosen, desc="training sets", unit="set"):
        examples, stats = convert(name, data_root)
        if not examples:
            raise DataError(f"training set {name!r} has no examples left after cleaning ({asdict(stats)})")
        file = f"{name}.jsonl"
        write_jsonl(out / file, (example.to_record() for example in examples))
        source = SOURCES[name]
        query_prompt, document_prompt = source.prompts
        entries[name] = {
            "file": file,
            "rows": stats.written,
            "with_negatives": sum(1 for e in examples if e.negatives),
            "task": source.task,
            "query_prompt": query_prompt,
            "document_prompt": document_prompt,
            "query_lang": source.query_lang,
            "doc_lang": source.doc_lang,
            "licence": source.licence,
            "description": source.description,
            "stats": asdict(stats),
        }
    write_json(out / MANIFEST, {"data_root": str(data_root or default_data_root()), "sets": entries})
    return {name: entry["rows"] for name, entry in entries.items()}


# --------------------------------------------------------------------------------------------- CLI


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    counts = write_training_sets(args.out, args.sets or None, Path(args.data) if args.data else None)
    width = max(map(len, counts))
    for name, rows in counts.items():
        print(f"{name:<{width}}  {rows:>7}")
    print(
        f"{'total':<{width}}  {sum(counts.values()):>7}   ({len(counts)} sets, {time.perf_counter() - start:.1f} s)"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add `build-training-sets --out DIR [--sets NAME ...] [--data DIR]` to the CLI."""
    parser = subparsers.add_parser(
        "build-training-sets", help="convert ../shared/data into JSONL training sets"
    )
    parser.add_argument("--out", required=True, help="output folder (under runs/)")
    parser.add_argument(
        "--sets", nargs="*", help=f"set names (default: all default sets; known: {', '.join(SOURCES)})"
    )
    parser.add_argument("--data", help=f"data root (default: ${DATA_ENV} or ../shared/data)")
    parser.set_defaults(func=_run)
