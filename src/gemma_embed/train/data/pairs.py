"""Training pairs: file readers and pair datasets with their task prompts (mixtures: `gemma_embed.train.data.mixture`).

A training example is a query, one positive and zero or more hard negatives (plain texts; the prompts are
per dataset and are prepended by the trainer with `gemma_embed.prompts.apply_prompt`). Every example also
carries two stable 64-bit ids for the false-negative mask of `gemma_embed.losses.nce.nce_loss`: by default
the hash of the query text and the hash of the positive text, so a query or positive that appears twice in
one batch is never used as an in-batch negative of itself. A dataset may give group ids instead (columns
`query_id` / `positive_id`, e.g. the intent label of same-intent pairs or the image of caption pairs); they
are hashed the same way, and examples sharing one are masked from each other.

Files are read with `gemma_embed.io.tables` (one reader per format, shared with eval, search and the CLI).

"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gemma_embed.errors import ConfigError, DataError
from gemma_embed.io.tables import location, read_json, read_records, write_jsonl
from gemma_embed.prompts import DEFAULT_PROMPTS

DOCUMENT_PROMPT = DEFAULT_PROMPTS["document"]

# Task name -> (query-side prompt, document-side prompt). Retrieval-like tasks put the document prompt on the
# positive and negatives; symmetric tasks (similarity, classification, bitext) use one prompt on both sides.
TASK_PROMPTS: dict[str, tuple[str, str]] = {
    "retrieval": (DEFAULT_PROMPTS["query"], DOCUMENT_PROMPT),
    "question_answering": ("task: question answering | query: ", DOCUMENT_PROMPT),
    "fact_checking": ("task: fact checking | query: ", DOCUMENT_PROMPT),
    "code_retrieval": (DEFAULT_PROMPTS["InstructionRetrieval"], DOCUMENT_PROMPT),
    "sentence_similarity": (DEFAULT_PROMPTS["STS"], DEFAULT_PROMPTS["STS"]),
    "classification": (DEFAULT_PROMPTS["Classification"], DEFAULT_PROMPTS["Classification"]),
    "clustering": (DEFAULT_PROMPTS["Clustering"], DEFAULT_PROMPTS["Clustering"]),
    "bitext": (DEFAULT_PROMPTS["BitextMining"], DEFAULT_PROMPTS["BitextMining"]),
}

MANIFEST = "manifest.json"


# --------------------------------------------------------------------------------------------- ids


def stable_id(text: str) -> int:
    """A stable signed 64-bit id of a string (BLAKE2b of its UTF-8 bytes), the same in every process."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


# --------------------------------------------------------------------------------------------- examples


@dataclass(frozen=True, slots=True)
class Example:
    """One training example: query, positive, hard negatives, optional group ids (None: the text is the id)."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    query_key: str | None = None
    positive_key: str | None = None

    @property
    def query_id(self) -> int:
        """64-bit id of the query for the false-negative mask."""
        return stable_id(self.query if self.query_key is None else self.query_key)

    @property
    def positive_id(self) -> int:
        """64-bit id of the positive for the false-negative mask."""
        return stable_id(self.positive if self.positive_key is None else self.positive_key)

    def to_record(self) -> dict[str, Any]:
        """The JSON-lines row `PairDataset.from_file` reads back with the default columns."""
        row: dict[str, Any] = {"query": self.query, "positive": self.positive}
        if self.negatives:
            row["negatives"] = list(self.negatives)
        if self.query_key is not None:
            row["query_id"] = self.query_key
        if self.positive_key is not None:
            row["positive_id"] = self.positive_key
        return row


@dataclass(frozen=True)
class Columns:
    """Column names of a pair file. `negative` holds one text; `negatives` a list (a JSON array in CSV/TSV)."""

    query: str = "query"
    positive: str = "positive"
    negative: str = "negative"
    negatives: str = "negatives"
    query_id: str = "query_id"
    positive_id: str = "positive_id"


def _optional_text(value: Any, where: str, column: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: column {column!r} must be text, got {type(value).__name__}")
    return value


def _required_text(value: Any, where: str, column: str) -> str:
    text = _optional_text(value, where, column)
    if text is None:
        raise DataError(f"{where}: missing or empty {column!r}; every row needs a {column}")
    return text


def _negative_cells(value: Any, where: str, column: str, *, in_text_table: bool) -> list[str]:
    if value is None or value == "":
        return []
    if in_text_table and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: column {column!r} must hold a JSON array of texts ({exc.msg})"
            ) from exc
    if not isinstance(value, list):
        raise DataError(f"{where}: column {column!r} must be a list of texts, got {type(value).__name__}")
    texts = [_optional_text(item, where, column) for item in value]
    return [text for text in texts if text is not None]


def _key_cell(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def parse_example(record: dict[str, Any], where: str, columns: Columns, *, text_table: bool) -> Example:
    """An `Example` from one table row; DataError (naming `where`) for a missing query or positive."""
    query = _required_text(record.get(columns.query), where, columns.query)
    positive = _required_text(record.get(columns.positive), where, columns.positive)
    single = _optional_text(record.get(columns.negative), where, columns.negative)
    negatives = [single] if single is not None else []
    negatives += _negative_cells(
        record.get(columns.negatives), where, columns.negatives, in_text_table=text_table
    )
    return Example(
        query=query,
        positive=positive,
        negatives=tuple(negatives),
        query_key=_key_cell(record.get(columns.query_id)),
        positive_key=_key_cell(record.get(columns.positive_id)),
    )


def prompts_for(task: str) -> tuple[str, str]:
    """(query prompt, document prompt) of a task name of `TASK_PROMPTS`."""
    try:
        return TASK_PROMPTS[task]
    except KeyError:
        raise ConfigError(f"unknown task {task!r}; known tasks: {', '.join(TASK_PROMPTS)}") from None


class PairDataset(Sequence[Example]):
    """Examples of one training set, with the prompts of its task and where each row came from."""

    def __init__(
        self,
        examples: Sequence[Example],
        *,
        name: str,
        query_prompt: str,
        document_prompt: str,
        origins: Sequence[str] | None = None,
    ) -> None:
        if origins is not None and len(origins) != len(examples):
            raise ConfigError(f"dataset {name!r}: {len(origins)} origins for {len(examples)} examples")
        self.examples = list(examples)
        self.name = name
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.origins = (
            list(origins) if origins is not None else [f"{name} example {i}" for i in range(len(examples))]
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        task: str = "retrieval",
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        columns: Columns | None = None,
    ) -> PairDataset:
        """Load a JSON-lines, CSV, TSV or Parquet pair file.

        Prompts are those of `task` (see `TASK_PROMPTS`) unless given explicitly. A row without a query or
        positive raises DataError naming the file and line.
        """
        file = Path(path)
        if not file.is_file():
            raise DataError(f"{file}: no such file")
        cols = columns or Columns()
        text_table = file.name.removesuffix(".gz").endswith((".csv", ".tsv"))
        examples, origins = [], []
        for number, record in read_records(file):
            where = location(file, number)
            examples.append(parse_example(record, where, cols, text_table=text_table))
            origins.append(where)
        if not examples:
            raise DataError(f"{file}: no examples")
        task_query, task_document = prompts_for(task)
        return cls(
            examples,
            name=name or file.name.split(".")[0],
            query_prompt=task_query if query_prompt is None else query_prompt,
            document_prompt=task_document if document_prompt is None else document_prompt,
            origins=origins,
        )

    def subset(self, max_rows: int, seed: int) -> PairDataset:
        """A seeded random subset of `max_rows` rows, in their original order (self when max_rows is 0 or not
        smaller). The seed mixes in the set's name, so the same (name, max_rows, seed) gives the same rows in
        training and in mining, and their teacher vectors are cached once."""
        if not 0 < max_rows < len(self):
            return self
        rng = np.random.default_rng([seed, zlib.crc32(self.name.encode())])
        rows = np.sort(rng.permutation(len(self))[:max_rows]).tolist()
        return PairDataset(
            [self.examples[i] for i in rows],
            name=self.name,
            query_prompt=self.query_prompt,
            document_prompt=self.document_prompt,
            origins=[self.origins[i] for i in rows],
        )

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write the examples as JSON lines that `from_file` reads back (atomic); returns the row count."""
        return write_jsonl(Path(path), (example.to_record() for example in self.examples))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:  # type: ignore[override]
        return self.examples[index]

    def __repr__(self) -> str:
        return f"PairDataset({self.name!r}, {len(self)} examples)"


def load_training_sets(
    directory: str | os.PathLike[str], names: Sequence[str] | None = None
) -> list[PairDataset]:
    """The training sets written by `gemma_embed.train.data.sources.write_training_sets` (all, or those named)."""
    root = Path(directory)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DataError(
            f"{manifest_path}: no manifest; write the sets with `gemma-embed build-training-sets`"
        )
    sets = read_json(manifest_path).get("sets", {})
    chosen = list(sets) if names is None else list(names)
    unknown = [name for name in chosen if name not in sets]
    if unknown:
        raise ConfigError(f"unknown training sets {unknown} in {manifest_path}; known: {', '.join(sets)}")
    return [
        PairDataset.from_file(
            root / sets[name]["file"],
            name=name,
            query_prompt=sets[name]["query_prompt"],
            document_prompt=sets[name]["document_prompt"],
        )
        for name in chosen
    ]
