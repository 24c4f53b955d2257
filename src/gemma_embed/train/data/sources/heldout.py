"""The held-out texts: evaluation and model-selection splits, and the test splits of every dataset the training
sets and the corpus read (they read train / dev / valid splits only), that never reach a training set or the
corpus: a test-split text that also sits in a train file is dropped there.

Texts are compared by `text_key` (NFKC, case folding, letters and digits only), so tokenized or lowercased
copies are caught too.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gemma_embed.paths import data_root as default_data_root
from gemma_embed.train.data.sources.files import (
    CODE_SEARCH,
    JAVA_CS,
    XQUAD_LANGS,
    ag_news_texts,
    banking77,
    beir_texts,
    clinc150,
    cosqa_queries,
    jglue_file,
    json_texts,
    jsonl_texts,
    kornli,
    msdocs_tagged,
    multi30k_test_texts,
    nli_jsonl,
    pair_texts,
    required_file,
    required_lines,
    scifact_queries,
    snips,
    snli,
    squad,
    sts_tagged,
    tatoeba_texts,
    tweeteval_texts,
    twitter_url_texts,
    wikiqa_texts,
)

# --------------------------------------------------------------------------------------------- text keys


def text_key(text: str) -> str:
    """Comparison key for leak checks: NFKC, case-folded, letters and digits only (any script)."""
    return "".join(filter(str.isalnum, unicodedata.normalize("NFKC", text).casefold()))


# --------------------------------------------------------------------------------------------- held-out texts


@dataclass(frozen=True)
class HeldOutGroup:
    """Texts of one evaluation or model-selection split, as `text_key`s."""

    name: str
    kind: str  # "evaluation" | "selection" | "test" (a test split of a training dataset)
    keys: frozenset[str]


def _training_test_splits(root: Path) -> Iterator[str]:
    """The texts of the test splits of the datasets the training sets and the corpus read (train / dev / valid
    splits only), and of the test-only datasets they leave out (mCoNaLa, SOHU)."""
    yield from multi30k_test_texts(root)
    yield from pair_texts(kornli(required_file(root, "kornli_xnli", "xnli.test.ko.tsv")))
    yield from pair_texts(nli_jsonl(required_file(root, "ocnli", "test.json")))
    yield from pair_texts(snli(root, "test"))
    yield from pair_texts(nli_jsonl(jglue_file(root, "jnli", "test")))
    yield from pair_texts(squad(jglue_file(root, "jsquad", "test")))  # questions and paragraphs
    yield from wikiqa_texts(root, "test")
    yield from (text for _, text in msdocs_tagged(root, "test"))
    yield from json_texts(required_file(root, "conala", "conala_test_500.json"), "intent")
    for lang in ("es", "ja", "ru"):
        mconala = required_file(root, "conala", "mconala", "dataset", "test", f"{lang}_test.json")
        yield from json_texts(mconala, "intent", "rewritten_intent")
    webquery_test = required_file(root, *CODE_SEARCH, "data", "test_webquery.json")  # CoSQA's test split
    yield from json_texts(webquery_test, "doc")
    for side in ("java", "cs"):
        yield from required_lines(root, *JAVA_CS, f"test.java-cs.txt.{side}")
    for name in ("dc", "dd"):
        sohu = required_file(root, "text2vec_zh", "SOHU", f"{name}-test.jsonl")
        yield from jsonl_texts(sohu, "sentence1", "sentence2")


_HELD_OUT: dict[str, tuple[str, Callable[[Path], Iterable[str]]]] = {
    "stsb-test": ("evaluation", lambda r: (text for _, text in sts_tagged(r, "test", "test"))),
    "scifact-test-queries": ("evaluation", lambda r: scifact_queries(r, "test")),
    "banking77-test": ("evaluation", lambda r: (text for text, _ in banking77(r, "test"))),
    "twitter-url-corpus": ("evaluation", twitter_url_texts),
    "tatoeba": ("evaluation", tatoeba_texts),
    "cosqa-test-queries": ("evaluation", lambda r: cosqa_queries(r, "test")),
    "classification-test": (
        "evaluation",
        lambda r: [
            *(text for text, _ in clinc150(r, ("test", "oos_test"))),
            *(text for text, _ in snips(r, "validate")),
            *ag_news_texts(r),
            *tweeteval_texts(r, "test"),
        ],
    ),
    "mini-beir-queries": (
        "evaluation",
        lambda r: [
            t
            for name in ("msmarco", "dbpedia", "arcd")
            for t in beir_texts(required_file(r, "mini_beir_agentset", name, "queries.jsonl"))
        ],
    ),
    # XQuAD is XQuADRetrieval's whole data (split "all"): its paragraphs are that task's corpus, so they are
    # held out with the questions.
    "xquad": (
        "evaluation",
        lambda r: [
            t
            for lang in XQUAD_LANGS
            for t in pair_texts(squad(required_file(r, "xquad", f"xquad.{lang}.json")))
        ],
    ),
    "training-test-splits": ("test", _training_test_splits),
    "stsb-dev": ("selection", lambda r: (text for _, text in sts_tagged(r, "dev", "valid"))),
    "scifact-train-queries": ("selection", lambda r: scifact_queries(r, "train")),
    "cosqa-dev-queries": ("selection", lambda r: cosqa_queries(r, "dev")),
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
