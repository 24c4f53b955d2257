"""Named tasks: MTEB task equivalents built from the project's local data (`../shared/data`).

The data root is `$GEMMA_EMBED_DATA` when set, else `../shared/data` next to the repository root (the
directory holding pyproject.toml), else `../shared/data` from the working directory. Each folder's
SOURCE.txt there says where its data comes from. A named task whose folder is missing raises DataError
naming the path it looked at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_embed.errors import DataError, InputError
from gemma_embed.eval.io import split_candidates
from gemma_embed.eval.runner import EvalTask
from gemma_embed.eval.tasks import TASK_TYPES, sts
from gemma_embed.eval.tasks.bitext_mining import load_parallel
from gemma_embed.eval.tasks.classification import load_files
from gemma_embed.eval.tasks.pair_classification import make_data as make_pairs
from gemma_embed.eval.tasks.retrieval import load_beir
from gemma_embed.eval.tasks.retrieval import make_data as make_retrieval
from gemma_embed.io.tables import read_lines, require_file
from gemma_embed.paths import DATA_ENV, data_root

PAIR_COLUMNS = ("sentence1", "sentence2", "score")


@dataclass(frozen=True)
class NamedTask:
    """A task of the registry. load(folder, subset, split) reads one subset's data from the task's folder."""

    name: str
    type: str
    folder: str
    splits: tuple[str, ...]
    default_split: str
    load: Callable[[Path, str, str], Any]
    subsets: Mapping[str, Sequence[str]] = field(default_factory=lambda: {"default": ["eng-Latn"]})
    find_subsets: Callable[[Path], Mapping[str, Sequence[str]]] | None = None  # subsets discovered on disk
    note: str = ""


def source_revision(folder: Path) -> str:
    """The upstream commit(s) named in the folder's SOURCE.txt (joined by "+"), else "local"."""
    source = folder / "SOURCE.txt"
    if not source.is_file():
        source = folder.parent / "SOURCE.txt"
    text = source.read_text(encoding="utf-8", errors="replace") if source.is_file() else ""
    commits = list(dict.fromkeys(re.findall(r"commit:\s*([0-9a-f]{40})", text)))
    return "+".join(commits) if commits else "local"


def _file_for_split(folder: Path, pattern: str, split: str) -> Path:
    """The first existing file `pattern.format(split=name)` over the names of `split` (dev/valid/validation)."""
    candidates = [folder / pattern.format(split=name) for name in split_candidates(split)]
    return next((p for p in candidates if p.is_file()), candidates[0])


# --- loaders of the datasets' own formats -----------------------------------------------------------------


def _stsbenchmark(folder: Path, subset: str, split: str) -> sts.STSData:
    return sts.load_stsb_original(require_file(_file_for_split(folder, "sts-{split}.csv", split)))


def _stsb_multi_mt(folder: Path, subset: str, split: str) -> sts.STSData:
    path = require_file(_file_for_split(folder / "data", f"stsb-{subset}-{{split}}.csv", split))
    return sts.load_table(path, columns=PAIR_COLUMNS, delimiter=",")


def _korsts(folder: Path, subset: str, split: str) -> sts.STSData:
    return sts.load_table(require_file(_file_for_split(folder, "sts-{split}.tsv", split)))


def _jsts(folder: Path, subset: str, split: str) -> sts.STSData:
    path = require_file(_file_for_split(folder / "jsts-v1.3", "{split}-v1.3.json", split))
    return sts.load_table(path, aliases={"label": "score"})


def _stsb_zh(folder: Path, subset: str, split: str) -> sts.STSData:
    path = require_file(_file_for_split(folder / "STS-B", "STS-B.{split}.data", split))
    return sts.load_table(path, columns=PAIR_COLUMNS, delimiter="\t")


def _scifact(folder: Path, subset: str, split: str) -> Any:
    return load_beir(folder, split)


def _cosqa(folder: Path, subset: str, split: str) -> Any:
    """CoCLR's CoSQA retrieval split: queries (`doc`) -> their code among the 6,267 snippets of
    code_idx_map.txt (a JSON object code -> index)."""
    map_path = require_file(folder / "code_idx_map.txt")
    corpus = {str(index): code for code, index in json.loads(map_path.read_text(encoding="utf-8")).items()}
    path = require_file(_file_for_split(folder, "cosqa-retrieval-{split}-500.json", split))
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for number, item in enumerate(json.loads(path.read_text(encoding="utf-8")), start=1):
        qid, target = str(item.get("idx")), str(item.get("retrieval_idx"))
        if target not in corpus:
            raise DataError(f"{path}: item {number}: retrieval_idx {target} is not in {map_path}")
        queries[qid] = str(item.get("doc", ""))
        qrels[qid] = {target: 1}
    return make_retrieval(corpus, queries, qrels)


def _xquad(folder: Path, subset: str, split: str) -> Any:
    """XQuAD as MTEB's XQuADRetrieval: each question retrieves its paragraph among the language's 240."""
    path = require_file(folder / f"xquad.{subset}.json")
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for a, article in enumerate(json.loads(path.read_text(encoding="utf-8"))["data"]):
        for p, paragraph in enumerate(article["paragraphs"]):
            doc_id = f"{a}-{p}"
            corpus[doc_id] = paragraph["context"]
            for qa in paragraph["qas"]:
                queries[qa["id"]] = qa["question"]
                qrels[qa["id"]] = {doc_id: 1}
    return make_retrieval(corpus, queries, qrels)


def _banking77(folder: Path, subset: str, split: str) -> Any:
    return load_files(folder / "train.csv", folder / f"{split}.csv", aliases={"category": "label"})


def _twitter_url_corpus(folder: Path, subset: str, split: str) -> Any:
    """MTEB's TwitterURLCorpus test set = castorini twitterPPDB train + test (51,524 tokenized pairs)."""
    sentences1: list[str] = []
    sentences2: list[str] = []
    labels: list[int] = []
    for part in ("train", "test"):
        pairs = load_parallel(folder / part / "a.toks", folder / part / "b.toks")
        sims = read_lines(folder / part / "sim.txt")
        if len(sims) != len(pairs.sentences1):
            raise DataError(
                f"{folder / part / 'sim.txt'}: {len(sims)} lines, but a.toks has {len(pairs.sentences1)}"
            )
        for number, value in enumerate(sims, start=1):
            if value.strip() not in ("0", "1"):
                raise DataError(
                    f"{folder / part / 'sim.txt'}: line {number}: label must be 0 or 1, got {value!r}"
                )
            labels.append(int(value))
        sentences1 += pairs.sentences1
        sentences2 += pairs.sentences2
    return make_pairs(sentences1, sentences2, labels, str(folder))


def _tatoeba(folder: Path, subset: str, split: str) -> Any:
    lang = subset.split("-")[0]
    return load_parallel(folder / f"tatoeba.{subset}.{lang}", folder / f"tatoeba.{subset}.eng")


def _tatoeba_subsets(folder: Path) -> dict[str, list[str]]:
    """Every `<lang>-eng` pair on disk, with ISO 639-3 codes (no script: the files do not say)."""
    pairs = sorted(p.name.split(".")[1] for p in folder.glob("tatoeba.*-eng.eng"))
    return {pair: pair.split("-") for pair in pairs}


# Subset -> language codes, as MTEB names them.
_LANGUAGES = {
    "ar": "arb-Arab", "de": "deu-Latn", "el": "ell-Grek", "en": "eng-Latn", "es": "spa-Latn", "fr": "fra-Latn",
    "hi": "hin-Deva", "it": "ita-Latn", "nl": "nld-Latn", "pl": "pol-Latn", "pt": "por-Latn", "ro": "ron-Latn",
    "ru": "rus-Cyrl", "th": "tha-Thai", "tr": "tur-Latn", "vi": "vie-Latn", "zh": "cmn-Hans",
}  # fmt: skip
_MULTI_MT = ("en", "de", "es", "fr", "it", "nl", "pl", "pt", "ru", "zh")
_XQUAD = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")

TASKS: dict[str, NamedTask] = {
    t.name: t
    for t in (
        NamedTask("STSBenchmark", "STS", "stsbenchmark", ("train", "dev", "test"), "test", _stsbenchmark),
        NamedTask(
            "STSBenchmarkMultilingualSTS",
            "STS",
            "stsb_multi_mt",
            ("train", "dev", "test"),
            "test",
            _stsb_multi_mt,
            subsets={lang: [_LANGUAGES[lang]] for lang in _MULTI_MT},
        ),
        NamedTask(
            "KorSTS",
            "STS",
            "korsts",
            ("train", "dev", "test"),
            "test",
            _korsts,
            subsets={"default": ["kor-Hang"]},
        ),
        NamedTask(
            "JSTS",
            "STS",
            "jglue",
            ("train", "validation", "test"),
            "validation",
            _jsts,
            subsets={"default": ["jpn-Jpan"]},
        ),
        NamedTask(
            "STSB",
            "STS",
            "text2vec_zh",
            ("train", "validation", "test"),
            "test",
            _stsb_zh,
            subsets={"default": ["cmn-Hans"]},
            note="Chinese STS-B (C-MTEB STSB)",
        ),
        NamedTask("SciFact", "Retrieval", "scifact", ("train", "test"), "test", _scifact),
        NamedTask(
            "CoSQA",
            "Retrieval",
            "cosqa",
            ("dev", "test"),
            "test",
            _cosqa,
            subsets={"default": ["eng-Latn", "python-Code"]},
            note="CoCLR retrieval split (6,267 snippets); not MTEB/CoIR's CosQA corpus",
        ),
        NamedTask(
            "XQuADRetrieval",
            "Retrieval",
            "xquad",
            ("validation",),
            "validation",
            _xquad,
            subsets={lang: [_LANGUAGES[lang]] for lang in _XQUAD},
        ),
        NamedTask("Banking77Classification", "Classification", "banking77", ("test",), "test", _banking77),
        NamedTask(
            "TwitterURLCorpus",
            "PairClassification",
            "castorini_data/twitterPPDB",
            ("test",),
            "test",
            _twitter_url_corpus,
            note="train + test of castorini twitterPPDB, as MTEB's test split",
        ),
        NamedTask(
            "Tatoeba",
            "BitextMining",
            "tatoeba_laser",
            ("test",),
            "test",
            _tatoeba,
            find_subsets=_tatoeba_subsets,
            note="112 <lang>-eng pairs (sentence1 <lang>, sentence2 eng)",
        ),
    )
}


def get_named_task(name: str) -> NamedTask:
    """A registry task by name (case-insensitive)."""
    for key, task in TASKS.items():
        if key.lower() == name.lower():
            return task
    raise InputError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")


def build_task(name: str, *, split: str | None = None, subsets: Sequence[str] | None = None) -> EvalTask:
    """The runnable `EvalTask` of a named task, for `split` (default: MTEB's evaluation split; "dev",
    "valid" and "validation" name the same split) and the given subsets (default: all). Raises DataError
    naming the folder when the task's data is missing."""
    task = get_named_task(name)
    asked = split
    root = data_root()
    folder = root / task.folder
    if not folder.is_dir():
        raise DataError(
            f"task {task.name}: data not found at {folder} (data root {root}; set {DATA_ENV} to the folder "
            "holding the project's shared data)"
        )
    split = (
        next((s for s in split_candidates(split) if s in task.splits), None) if split else task.default_split
    )
    if split is None:
        raise InputError(f"task {task.name} has no split {asked!r}; splits: {', '.join(task.splits)}")
    available = dict(task.find_subsets(folder) if task.find_subsets else task.subsets)
    chosen = list(subsets) if subsets else list(available)
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise InputError(
            f"task {task.name} has no subset(s) {', '.join(unknown)}; subsets: {', '.join(available)}"
        )
    return EvalTask(
        name=task.name,
        task_type=TASK_TYPES[task.type],
        split=split,
        subsets={s: _bind(task.load, folder, s, split) for s in chosen},
        languages={s: list(available[s]) for s in chosen},
        revision=source_revision(folder),
    )


def _bind(load: Callable[[Path, str, str], Any], folder: Path, subset: str, split: str) -> Callable[[], Any]:
    return lambda: load(folder, subset, split)
