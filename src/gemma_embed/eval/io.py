"""File access for the evaluation harness: local data tables as checked `Row`s (parsed by
`gemma_embed.io.tables`), split file names, and writing outputs atomically.

Data files are delimited tables (`.csv`, `.tsv`), JSON Lines (`.jsonl`, or `.json` holding one object per
line as JGLUE ships it, or a JSON array of objects) and plain line files. Every problem raises `DataError`
naming the file, the line (when there is one) and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gemma_embed.errors import DataError
from gemma_embed.io.files import atomic_write
from gemma_embed.io.tables import read_cells, read_jsonl, read_text, require_file

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
# Split names that mean the same split in different datasets (MTEB says "validation", STS-B "dev", JGLUE "valid").
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "validation": ("validation", "dev", "valid"),
    "dev": ("dev", "validation", "valid"),
    "valid": ("valid", "validation", "dev"),
}


@dataclass(frozen=True)
class Row:
    """One record of a data file: its 1-based line number (item number in a JSON array, `unit` "item") and
    its fields by (canonical) column name."""

    path: Path
    line: int
    fields: Mapping[str, Any]
    unit: str = "line"

    def error(self, problem: str) -> DataError:
        """A DataError that points at this row."""
        return DataError(f"{self.path}: {self.unit} {self.line}: {problem}")

    def text(self, name: str) -> str:
        """Field `name` as a string (must be present)."""
        value = self.fields[name]
        if not isinstance(value, str):
            raise self.error(f"field {name!r} must be a string, got {type(value).__name__}")
        return value

    def number(self, name: str) -> float:
        """Field `name` as a finite float."""
        value = self.fields[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.error(f"field {name!r} must be a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise self.error(f"field {name!r} must be a finite number, got {value!r}")
        return number

    def integer(self, name: str) -> int:
        """Field `name` as an integer ("1", 1 and 1.0 are accepted; 1.5 is not)."""
        number = self.number(name)
        if number != int(number):
            raise self.error(f"field {name!r} must be an integer, got {self.fields[name]!r}")
        return int(number)

    def texts(self, name: str) -> list[str]:
        """Field `name` as a list of strings (JSON input)."""
        value = self.fields[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"field {name!r} must be a list of strings")
        return value


def read_rows(
    path: Path,
    required: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    aliases: Mapping[str, str] | None = None,
    delimiter: str | None = None,
    allow_extra_fields: bool = False,
) -> list[Row]:
    """Read every record of a table or JSON Lines file, checking that the `required` columns exist.

    columns: names of the fields of a file without a header row (delimited files only).
    aliases: other column names accepted for a canonical name, e.g. {"label": "score"}.
    delimiter: force "," or "\\t"; by default `.tsv` is tab-separated, `.csv` is tab-separated when its first
    line has a tab and no comma (as the STS benchmark's `.csv` files are), else comma-separated.
    allow_extra_fields: accept rows with more fields than `columns` (extra fields are ignored).
    Raises DataError for a missing file, missing columns, malformed rows and a file without records.
    """
    require_file(path)
    if path.suffix in (".jsonl", ".json"):
        rows = _read_json_records(path)
    else:
        rows = _read_delimited(path, columns, delimiter, allow_extra_fields)
    if not rows:
        with open(path, "rb") as f:
            end = sum(1 for _ in f) + 1
        raise DataError(f"{path}: line {end}: end of file without any record (the split is empty)")
    renamed = [_rename(row, aliases or {}) for row in rows]
    present = set(renamed[0].fields)
    missing = [name for name in required if name not in present]
    if missing:
        found = ", ".join(sorted(rows[0].fields)) or "none"
        raise rows[0].error(f"missing column(s) {', '.join(map(repr, missing))} (found: {found})")
    for row in renamed:
        absent = [name for name in required if name not in row.fields]
        if absent:
            raise row.error(f"missing field(s) {', '.join(map(repr, absent))}")
    return renamed


def _rename(row: Row, aliases: Mapping[str, str]) -> Row:
    if not aliases:
        return row
    fields = {aliases.get(name, name): value for name, value in row.fields.items()}
    return Row(row.path, row.line, fields, row.unit)


def _sniff_delimiter(path: Path) -> str:
    if path.suffix == ".tsv":
        return "\t"
    with open(path, encoding="utf-8-sig") as f:
        first = f.readline()
    return "\t" if "\t" in first and "," not in first else ","


def _read_delimited(
    path: Path, columns: Sequence[str] | None, delimiter: str | None, allow_extra_fields: bool
) -> list[Row]:
    # Tab-separated text files quote nothing: a '"' inside a sentence is part of the sentence (`read_cells`).
    rows: list[Row] = []
    header = list(columns) if columns is not None else None
    for line, record in read_cells(path, delimiter=delimiter or _sniff_delimiter(path)):
        if header is None:
            header = [name.strip() for name in record]
            continue
        if len(record) < len(header) or (len(record) > len(header) and not allow_extra_fields):
            raise DataError(f"{path}: line {line}: expected {len(header)} fields, found {len(record)}")
        rows.append(Row(path, line, dict(zip(header, record, strict=False))))
    return rows


def _read_json_records(path: Path) -> list[Row]:
    content = read_text(path)
    if path.suffix == ".json" and content.lstrip().startswith("["):
        try:
            items = json.loads(content)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from None
        for number, item in enumerate(items, start=1):
            if not isinstance(item, dict):
                raise DataError(f"{path}: item {number}: expected a JSON object, got {type(item).__name__}")
        return [Row(path, number, item, "item") for number, item in enumerate(items, start=1)]
    return [Row(path, number, item) for number, item in read_jsonl(path)]


def split_candidates(split: str) -> tuple[str, ...]:
    """Names a split may carry in file names (the split itself first)."""
    return SPLIT_ALIASES.get(split, (split,))


def find_split_file(path: Path, split: str) -> Path:
    """The data file for `split`: `path` itself if it is a file, else the one file in the directory `path`
    whose name (without suffix) is the split or ends in `-split`, `_split` or `.split`."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory")
    names = split_candidates(split)
    matches = []
    for candidate in sorted(path.iterdir()):
        if not candidate.is_file() or candidate.suffix not in TABLE_SUFFIXES:
            continue
        stem = candidate.stem
        if any(stem == n or stem.endswith((f"-{n}", f"_{n}", f".{n}")) for n in names):
            matches.append(candidate)
    if not matches:
        raise DataError(
            f"{path}: no data file for split {split!r} (expected e.g. {split}.csv, {split}.tsv or {split}.jsonl)"
        )
    if len(matches) > 1:
        raise DataError(
            f"{path}: several files match split {split!r}: {', '.join(m.name for m in matches)}; "
            "pass the file itself"
        )
    return matches[0]


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through `write(binary_file)` atomically (`gemma_embed.io.files.atomic_write`)."""
    with atomic_write(path, "wb") as f:
        write(f)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """`write_atomic` for UTF-8 text."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))
