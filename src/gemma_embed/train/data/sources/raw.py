"""All text of the train / dev / valid splits of the shared data by source group and language (the input of the
text corpus), held-out texts not yet removed (the corpus builder removes them). No test split of any dataset
is read; a dataset with only a test split (mCoNaLa, the SOHU matching sets) is not read at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from gemma_embed.io.tables import read_json, read_jsonl
from gemma_embed.paths import data_root as default_data_root
from gemma_embed.train.data.sources.converters import bge_zh, caption_pairs
from gemma_embed.train.data.sources.files import (
    CODE_SEARCH,
    JAVA_CS,
    MULTI30K_LANGS,
    MULTI30K_RAW,
    LangText,
    banking77,
    beir_texts,
    clinc150,
    example_texts,
    jglue_file,
    json_texts,
    kornli,
    msdocs_tagged,
    nli_jsonl,
    pair_texts,
    required_file,
    required_lines,
    snips,
    squad,
    sts_tagged,
    tagged,
    tweeteval_texts,
    wikiqa_texts,
)

# --------------------------------------------------------------------------------------------- raw text


def _raw_sts(root: Path) -> Iterator[LangText]:
    for split, split_ja_zh in (("train", "train"), ("dev", "valid")):
        yield from sts_tagged(root, split, split_ja_zh)


def _raw_nli(root: Path) -> Iterator[LangText]:
    for name in ("s1", "s2", "preproc1_expl_1"):  # premise, hypothesis, human explanation
        yield from tagged("en", required_lines(root, "snli_devtest_esnli", f"{name}.dev"))
    yield from tagged("ko", pair_texts(kornli(required_file(root, "kornli_xnli", "xnli.dev.ko.tsv"))))
    for name in ("train.10k", "dev"):
        yield from tagged("zh", pair_texts(nli_jsonl(required_file(root, "ocnli", f"{name}.json"))))
    yield from tagged("ja", pair_texts(nli_jsonl(jglue_file(root, "jnli", "valid"))))


def _raw_qa(root: Path) -> Iterator[LangText]:
    yield from tagged("ja", pair_texts(squad(jglue_file(root, "jsquad", "valid"))))
    for split in ("train", "dev"):
        yield from tagged("en", wikiqa_texts(root, split))
    for item in read_json(required_file(root, "pubmedqa", "ori_pqal.json")).values():
        yield from tagged("en", (item["QUESTION"], *item["CONTEXTS"], item["LONG_ANSWER"]))
    for _, row in read_jsonl(required_file(root, "climate_fever", "climate-fever.jsonl")):
        yield from tagged("en", (row["claim"], *(e["evidence"] for e in row["evidences"])))


def _raw_captions(root: Path) -> Iterator[LangText]:
    yield from tagged("en", example_texts(caption_pairs(root)))
    raw = root.joinpath(*MULTI30K_RAW)
    for split in ("train", "val"):  # the test_* sets are held out
        for lang in ("en", *MULTI30K_LANGS):
            yield from tagged(lang, required_lines(raw, f"{split}.{lang}.gz"))


def _raw_bitext(root: Path) -> Iterator[LangText]:
    yield from msdocs_tagged(root, "dev")


def _raw_code(root: Path) -> Iterator[LangText]:
    conala_train = required_file(root, "conala", "mconala", "dataset", "train", "train.json")
    yield from tagged("en", json_texts(conala_train, "intent", "rewritten_intent"))
    yield from tagged("code", json_texts(conala_train, "snippet"))
    yield from tagged("en", required_lines(root, "django_code", "all.anno"))
    yield from tagged("code", required_lines(root, "django_code", "all.code"))
    cosqa_dev = required_file(root, *CODE_SEARCH, "CoSQA", "cosqa-dev.json")
    yield from tagged("en", json_texts(cosqa_dev, "doc"))
    yield from tagged("code", json_texts(cosqa_dev, "code"))
    yield from tagged(
        "code", read_json(required_file(root, "cosqa", "code_idx_map.txt"))
    )  # CoSQA's code corpus
    for split in ("train", "valid"):
        for side in ("java", "cs"):
            yield from tagged("code", required_lines(root, *JAVA_CS, f"{split}.java-cs.txt.{side}"))


def _raw_classification(root: Path) -> Iterator[LangText]:
    yield from tagged("en", (text for text, _ in banking77(root, "train")))
    yield from tagged("en", (text for text, _ in clinc150(root, ("train", "val", "oos_train", "oos_val"))))
    yield from tagged("en", (text for text, _ in snips(root, "train")))
    for split in ("train", "val"):
        yield from tagged("en", tweeteval_texts(root, split))


def _raw_chinese(root: Path) -> Iterator[LangText]:
    yield from tagged("zh", example_texts(bge_zh(root)))


def _raw_documents(root: Path) -> Iterator[LangText]:
    yield from tagged("en", beir_texts(required_file(root, "scifact", "corpus.jsonl")))
    for name, lang in (("msmarco", "en"), ("dbpedia", "en"), ("arcd", "ar")):
        yield from tagged(lang, beir_texts(required_file(root, "mini_beir_agentset", name, "corpus.jsonl")))


# Source group -> reader of (language, text) of the train / dev / valid splits of its files. No test split is
# read, nor evaluation-only files (Tatoeba, TwitterURLCorpus, AG News test, Banking77 test, the SciFact /
# mini-BEIR queries); the held-out texts of the files read (dev splits of evaluation sets, copies of test
# texts) are removed by the corpus builder. TrecQA (tokenized pseudo-XML, ~1.5k sentences) is not read.
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
