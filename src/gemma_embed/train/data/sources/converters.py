"""Converters of the real data in `../shared/data` into training sets, and the held-out (evaluation) texts.

Every training set is registered by name with its task (hence prompts, see `gemma_embed.train.data.pairs`), the
languages of its query and document sides, and a licence note. `write_training_sets` converts the default
sets into `<name>.jsonl` files plus a `manifest.json` that `gemma_embed.train.data.pairs.load_training_sets` reads.

Evaluation data never reaches a training set: before writing, every query, positive and negative is checked
against the held-out texts (compared after NFKC, case folding and dropping everything but letters and
digits, so tokenized or lowercased copies are caught too):

- evaluation (never trained on): STS-B test in every language (English, the 10 stsb_multi_mt translations,
  KorSTS, JSTS, Chinese STS-B), SciFact test queries, Banking77 test, TwitterURLCorpus (all of
  castorini_data/twitterPPDB), Tatoeba (all), CoSQA retrieval test queries, the test texts of the
  classification/clustering sets (AG News, CLINC150, SNIPS validate, TweetEval), the mini-BEIR queries and
  all of XQuAD, questions and paragraphs (the README lists XQuAD, all of it, as an evaluation set: it is
  XQuADRetrieval, whose corpus the paragraphs are);
- model selection (kept out of the default sets): STS-B dev in every language, SciFact train queries, CoSQA
  retrieval dev queries;
- test splits of training datasets (`training-test-splits`; never trained on, whatever else is): the
  Multi30k test sets (every language), KorNLI's XNLI test, OCNLI test, SNLI test, JNLI test, JSQuAD test
  (questions and paragraphs), WikiQA test, the MS-docs bitext test (both sides), the CoNaLa and mCoNaLa test
  intents, CodeSearch's test_webquery queries (CoSQA's test), the Java-C# test functions and the SOHU test
  pairs.

A set that is itself made of held-out texts (`stsb_dev`, `xquad_*`) is registered but not a default set;
it is exempt only from its own group. Other rules: no test split of any dataset is read. Only train splits
are used where a dataset has one; where the snapshot has none and the dataset is not an evaluation set, the
dev/valid split is used (SNLI dev, JNLI valid, JSQuAD valid, the MS-docs bitext dev, KorNLI's XNLI dev), and a
dataset with only a test split (mCoNaLa) is not used at all; STS pairs are positives when the score is >= 4; pairs whose two sides are the same text after normalization are dropped,
as are exact duplicates. Bitext sets pair an English source (query) with its translation (positive): the
source's teacher vector is the distillation target of both sides (`gemma_embed.losses.parallel_distillation`).

"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gemma_embed.errors import ConfigError, DataError
from gemma_embed.io.tables import location, read_json, read_jsonl, read_lines
from gemma_embed.train.data.pairs import Example, prompts_for, stable_id
from gemma_embed.train.data.sources.files import (
    CODE_SEARCH,
    JAVA_CS,
    MSDOCS,
    MSDOCS_LANGS,
    MULTI30K_LANGS,
    MULTI30K_RAW,
    STS_POSITIVE_SCORE,
    STSB_MT_LANGS,
    XQUAD_LANGS,
    NliRow,
    ScoredPair,
    aligned,
    banking77,
    cell,
    clinc150,
    jglue_file,
    jsts,
    kornli,
    korsts,
    nli_jsonl,
    required_file,
    required_lines,
    snips,
    snli,
    squad,
    stsb_multi_mt,
    stsbenchmark,
    zh_stsb,
)

_U64 = (1 << 64) - 1


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


def caption_pairs(root: Path) -> Iterator[Example]:
    """Flickr8k: consecutive captions of one image (cyclic), with the image as both ids."""
    path = required_file(root, "flickr8k_captions", "Flickr8k.token.txt")
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
    columns = [required_lines(base, name) for name in ("id.txt", "a.toks", "b.toks", "sim.txt")]
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
    path = required_file(root, "climate_fever", "climate-fever.jsonl")
    for _, row in read_jsonl(path):
        evidences = row["evidences"]
        negatives = tuple(e["evidence"] for e in evidences if e["evidence_label"] == "NOT_ENOUGH_INFO")
        for evidence in evidences:
            if evidence["evidence_label"] != "NOT_ENOUGH_INFO":
                yield Example(row["claim"], evidence["evidence"], negatives)


def _pubmedqa(root: Path) -> Iterator[Example]:
    for item in read_json(required_file(root, "pubmedqa", "ori_pqal.json")).values():
        yield Example(item["QUESTION"], " ".join(item["CONTEXTS"]))


def _conala(root: Path) -> Iterator[Example]:
    """CoNaLa train (English): the rewritten intent (else the raw intent) -> snippet."""
    for item in read_json(required_file(root, "conala", "mconala", "dataset", "train", "train.json")):
        yield Example(item.get("rewritten_intent") or item["intent"], item["snippet"])


def _django(root: Path) -> Iterator[Example]:
    base = root / "django_code"
    for annotation, code in aligned(required_file(base, "all.anno"), required_file(base, "all.code")):
        yield Example(annotation, code)


def _cosqa_dev_pairs(root: Path) -> Iterator[Example]:
    """CodeXGLUE CoSQA dev: web query -> Python function, pairs labelled relevant (1)."""
    for item in read_json(required_file(root, *CODE_SEARCH, "CoSQA", "cosqa-dev.json")):
        if item["label"] == 1:
            yield Example(item["doc"], item["code"])


def _java_cs(root: Path) -> Iterator[Example]:
    base = root.joinpath(*JAVA_CS)
    for java, cs in aligned(
        required_file(base, "train.java-cs.txt.java"), required_file(base, "train.java-cs.txt.cs")
    ):
        yield Example(java, cs)


def _msdocs_bitext(root: Path, lang: str) -> Iterator[Example]:
    """MS-docs dev (the snapshot has no train split; its test split is held out): English -> translation."""
    base = root.joinpath(*MSDOCS, "dev")
    for english, other in aligned(
        required_file(base, f"{lang}-en.dev.en"), required_file(base, f"{lang}-en.dev.{lang}")
    ):
        yield Example(english, other)


def _multi30k(root: Path, lang: str) -> Iterator[Example]:
    base = root.joinpath(*MULTI30K_RAW)
    for english, other in aligned(
        required_file(base, "train.en.gz"), required_file(base, f"train.{lang}.gz")
    ):
        yield Example(english, other)


def _stsb_bitext(root: Path, lang: str) -> Iterator[Example]:
    """English STS-B train sentences -> their stsb_multi_mt translation."""
    for (e1, e2, _), (t1, t2, _) in zip(
        stsb_multi_mt(root, "en", "train"), stsb_multi_mt(root, lang, "train"), strict=True
    ):
        yield Example(e1, t1)
        yield Example(e2, t2)


def _stsb_mt_pairs(root: Path, lang: str) -> Iterator[Example]:
    return _sts_examples(stsb_multi_mt(root, lang, "train"))


def _xquad(root: Path, lang: str) -> Iterator[Example]:
    for question, paragraph in squad(required_file(root, "xquad", f"xquad.{lang}.json")):
        yield Example(question, paragraph)


def bge_zh(root: Path) -> Iterator[Example]:
    path = required_file(root, "text2vec_zh", "bge_finetune_data.jsonl")
    for n, row in read_jsonl(path):
        query = cell(row, "query", path, n)
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
    lambda r: _sts_examples(stsbenchmark(r, "train")),
    task="sentence_similarity",
    lang="en",
    licence=_STS_LICENCE,
    description="STS-B train pairs with score >= 4",
)
_add(
    "stsb_dev",
    lambda r: _sts_examples(stsbenchmark(r, "dev")),
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
    lambda r: _sts_examples(korsts(r, "train")),
    task="sentence_similarity",
    lang="ko",
    licence="CC BY-SA 4.0 (KorNLUDatasets)",
    description="KorSTS train pairs with score >= 4",
)
_add(
    "jsts",
    lambda r: _sts_examples(jsts(r, "train")),
    task="sentence_similarity",
    lang="ja",
    licence="CC BY-SA 4.0 (JGLUE)",
    description="JGLUE JSTS train pairs with score >= 4",
)
_add(
    "zh_stsb",
    lambda r: _sts_examples(zh_stsb(r, "train")),
    task="sentence_similarity",
    lang="zh",
    licence="Apache-2.0 repo; STS-B CC BY-SA 4.0",
    description="Chinese STS-B (text2vec) train pairs, score >= 4",
)
_add(
    "text2vec_zh",
    bge_zh,
    task="sentence_similarity",
    lang="zh",
    licence="Apache-2.0 repo; STS-B CC BY-SA 4.0",
    description="text2vec bge_finetune_data: Chinese query -> positive with mined hard negatives",
)
_add(
    "snli",
    lambda r: _nli_examples(snli(r, "dev")),
    task="sentence_similarity",
    lang="en",
    licence="SNLI CC BY-SA 4.0; e-SNLI MIT",
    description="SNLI dev (no train split in the snapshot; the test split is held out): premise -> entailment, "
    "contradictions as hard negatives",
)
_add(
    "ocnli",
    lambda r: _nli_examples(nli_jsonl(required_file(r, "ocnli", "train.10k.json"))),
    task="sentence_similarity",
    lang="zh",
    licence="CC BY-NC 2.0 (non-commercial)",
    description="OCNLI train.10k: premise -> entailment, contradictions as hard negatives",
)
_add(
    "kornli",
    lambda r: _nli_examples(kornli(required_file(r, "kornli_xnli", "xnli.dev.ko.tsv"))),
    task="sentence_similarity",
    lang="ko",
    licence="CC BY-SA 4.0 (KorNLUDatasets)",
    description="KorNLI (XNLI dev; the test split is held out): premise -> entailment, contradictions as hard "
    "negatives",
)
_add(
    "jnli",
    lambda r: _nli_examples(nli_jsonl(jglue_file(r, "jnli", "valid"))),
    task="sentence_similarity",
    lang="ja",
    licence="CC BY-SA 4.0 (JGLUE)",
    description="JGLUE JNLI valid (no train split in the snapshot; the test split is held out): premise -> "
    "entailment, contradictions as hard negatives",
)
_add(
    "flickr8k",
    caption_pairs,
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
        description=f"CodeXGLUE MS-docs dev (no train split in the snapshot; test held out): English -> {_lang}",
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
    lambda r: (Example(q, p) for q, p in squad(jglue_file(r, "jsquad", "valid"))),
    task="question_answering",
    lang="ja",
    licence="CC BY-SA 4.0 (JGLUE)",
    description="JGLUE JSQuAD valid (no train split in the snapshot; the test split is held out): question -> "
    "paragraph",
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
        exempt=("xquad",),
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
    lambda r: _same_label_pairs(banking77(r, "train"), "banking77"),
    task="classification",
    lang="en",
    licence="CC BY 4.0",
    description="Banking77 train: utterance -> utterance of the same intent",
)
_add(
    "clinc150",
    lambda r: _same_label_pairs(clinc150(r, ("train",)), "clinc150"),
    task="classification",
    lang="en",
    licence="CC BY 3.0",
    description="CLINC150 train (in-scope): utterance -> utterance of the same intent",
)
_add(
    "snips",
    lambda r: _same_label_pairs(snips(r, "train"), "snips"),
    task="classification",
    lang="en",
    licence="CC0 1.0",
    description="SNIPS train_full: utterance -> utterance of the same intent",
)
