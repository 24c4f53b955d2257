"""All text of the shared data by source group and language (the input of the text corpus), held-out texts
not yet removed (the corpus builder removes them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from gemma_embed.io.tables import read_json, read_jsonl, read_lines
from gemma_embed.paths import data_root as default_data_root
from gemma_embed.train.data.sources.converters import bge_zh, caption_pairs
from gemma_embed.train.data.sources.files import (
    CODE_SEARCH,
    JAVA_CS,
    MSDOCS,
    MSDOCS_LANGS,
    MULTI30K_LANGS,
    MULTI30K_RAW,
    XQUAD_LANGS,
    LangText,
    banking77,
    beir_texts,
    clinc150,
    example_texts,
    json_texts,
    jsonl_texts,
    kornli,
    nli_jsonl,
    pair_texts,
    required_file,
    required_lines,
    snips,
    squad,
    sts_tagged,
    tagged,
    tweeteval_texts,
)

# --------------------------------------------------------------------------------------------- raw text


def _raw_sts(root: Path) -> Iterator[LangText]:
    for split, split_ja_zh in (("train", "train"), ("dev", "valid"), ("test", "test")):
        yield from sts_tagged(root, split, split_ja_zh)


def _raw_nli(root: Path) -> Iterator[LangText]:
    for split in ("dev", "test"):
        for name in ("s1", "s2", "preproc1_expl_1"):  # premise, hypothesis, human explanation
            yield from tagged("en", required_lines(root, "snli_devtest_esnli", f"{name}.{split}"))
        yield from tagged(
            "ko", pair_texts(kornli(required_file(root, "kornli_xnli", f"xnli.{split}.ko.tsv")))
        )
    for name in ("train.10k", "dev", "test"):
        yield from tagged("zh", pair_texts(nli_jsonl(required_file(root, "ocnli", f"{name}.json"))))
    for split in ("valid", "test"):
        yield from tagged(
            "ja", pair_texts(nli_jsonl(required_file(root, "jglue", "jnli-v1.3", f"{split}-v1.3.json")))
        )


def _raw_qa(root: Path) -> Iterator[LangText]:
    for split in ("valid", "test"):
        yield from tagged(
            "ja", pair_texts(squad(required_file(root, "jglue", "jsquad-v1.3", f"{split}-v1.3.json")))
        )
    for lang in XQUAD_LANGS:  # the questions are held out; the paragraphs are documents
        yield from tagged(lang, pair_texts(squad(required_file(root, "xquad", f"xquad.{lang}.json"))))
    for split in ("train", "dev", "test"):
        for name in ("a.toks", "b.toks"):
            yield from tagged("en", required_lines(root, "castorini_data", "WikiQA", split, name))
    for item in read_json(required_file(root, "pubmedqa", "ori_pqal.json")).values():
        yield from tagged("en", (item["QUESTION"], *item["CONTEXTS"], item["LONG_ANSWER"]))
    for _, row in read_jsonl(required_file(root, "climate_fever", "climate-fever.jsonl")):
        yield from tagged("en", (row["claim"], *(e["evidence"] for e in row["evidences"])))


def _raw_captions(root: Path) -> Iterator[LangText]:
    yield from tagged("en", example_texts(caption_pairs(root)))
    raw = root.joinpath(*MULTI30K_RAW)
    for lang in ("en", *MULTI30K_LANGS):
        for path in sorted(raw.glob(f"*.{lang}.gz")):
            yield from tagged(lang, read_lines(path))


def _raw_bitext(root: Path) -> Iterator[LangText]:
    for lang in MSDOCS_LANGS:
        for split in ("dev", "test"):
            for side in ("en", lang):
                yield from tagged(side, required_lines(root, *MSDOCS, split, f"{lang}-en.{split}.{side}"))


def _raw_code(root: Path) -> Iterator[LangText]:
    conala_train = required_file(root, "conala", "mconala", "dataset", "train", "train.json")
    conala_test = required_file(root, "conala", "conala_test_500.json")
    yield from tagged("en", json_texts(conala_train, "intent", "rewritten_intent"))
    yield from tagged("en", json_texts(conala_test, "intent"))
    yield from tagged("code", json_texts(conala_train, "snippet"))
    yield from tagged("code", json_texts(conala_test, "code"))
    for lang in ("es", "ja", "ru"):
        mconala = required_file(root, "conala", "mconala", "dataset", "test", f"{lang}_test.json")
        yield from tagged(lang, json_texts(mconala, "intent", "rewritten_intent"))
        yield from tagged("code", json_texts(mconala, "snippet"))
    yield from tagged("en", required_lines(root, "django_code", "all.anno"))
    yield from tagged("code", required_lines(root, "django_code", "all.code"))
    for parts in (("CoSQA", "cosqa-dev.json"), ("data", "test_webquery.json")):
        path = required_file(root, *CODE_SEARCH, *parts)
        yield from tagged("en", json_texts(path, "doc"))
        yield from tagged("code", json_texts(path, "code"))
    yield from tagged(
        "code", read_json(required_file(root, "cosqa", "code_idx_map.txt"))
    )  # CoSQA's code corpus
    for split in ("train", "valid", "test"):
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
    for name in ("dc", "dd"):
        path = required_file(root, "text2vec_zh", "SOHU", f"{name}-test.jsonl")
        yield from tagged("zh", jsonl_texts(path, "sentence1", "sentence2"))


def _raw_documents(root: Path) -> Iterator[LangText]:
    yield from tagged("en", beir_texts(required_file(root, "scifact", "corpus.jsonl")))
    for name, lang in (("msmarco", "en"), ("dbpedia", "en"), ("arcd", "ar")):
        yield from tagged(lang, beir_texts(required_file(root, "mini_beir_agentset", name, "corpus.jsonl")))


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
