"""Readers of table and text files, shared by training, evaluation, search and the CLI: one per format.

`read_text` (UTF-8, gzip-compressed when the name ends in `.gz`, BOM removed; a UTF-16 surrogate pair written
as two 3-byte sequences, CESU-8, found in the SNIPS files, is repaired rather than rejected), `read_lines`,
`read_json`, `read_jsonl`, `read_cells` / `read_delimited` (CSV with RFC 4180 quoting, TSV without quoting),
`read_parquet`, and `read_records` choosing among them by file name. Problems raise `DataError` (or the error
type a caller passes, e.g. `CheckpointError` for a checkpoint's JSON) naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gemma_embed.errors import ConfigError, DataError, GemmaEmbedError
from gemma_embed.io.files import atomic_write


def require_file(path: Path) -> Path:
    """`path` if it is a file, else a DataError saying so."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line, atomically; returns the number of rows."""
    count = 0
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False))
            handle.write("\n")
            count += 1
    return count


def read_text(path: Path, *, error: type[GemmaEmbedError] = DataError) -> str:
    """The whole text of a UTF-8 file (`.gz`: gzip-compressed), BOM removed, CESU-8 surrogate pairs repaired."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = (
                data.decode("utf-8", "surrogatepass").encode("utf-16-le", "surrogatepass").decode("utf-16-le")
            )
        except UnicodeError as exc:
            raise error(f"{path}: not UTF-8 text ({exc})") from exc
    return text.removeprefix("\ufeff")


def read_lines(path: Path) -> list[str]:
    """The lines of a line-aligned text file, without line terminators (a final empty line is dropped)."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_json(path: Path, *, required: bool = True, error: type[GemmaEmbedError] = DataError) -> Any:
    """A whole-file JSON document (None for a missing file that is not `required`)."""
    if not path.is_file():
        if required:
            raise error(f"{path} is missing")
        return None
    try:
        return json.loads(read_text(path, error=error))
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc


def parse_json_lines(lines: Iterable[str], where: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of JSON-lines text; `where` names the source in errors."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}, line {lineno}: invalid JSON ({exc.msg})") from exc
        yield lineno, value


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON-lines file."""
    for lineno, record in parse_json_lines(read_lines(path), str(path)):
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def read_cells(path: Path, *, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) of every non-blank record of a CSV (`delimiter=","`, RFC 4180 quoting) or
    TSV file (`"\t"`, no quoting: TSV texts contain unbalanced quotes, e.g. STS-B's)."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, quoting=quoting)
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if any(cell.strip() for cell in cells):
                yield line, cells
    except csv.Error as exc:
        raise DataError(f"{location(path, reader.line_num)}: {exc}") from None


def read_delimited(
    path: Path, *, delimiter: str = ",", fieldnames: Sequence[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV or TSV file (`read_cells`).

    Column names come from the header row unless `fieldnames` is given (for files without a header).
    Surplus cells of ragged rows are ignored; a missing cell reads as None.
    """
    records = read_cells(path, delimiter=delimiter)
    names = list(fieldnames) if fieldnames is not None else next((cells for _, cells in records), None)
    if names is None:
        return
    for line, cells in records:
        padded = [*cells[: len(names)], *[None] * (len(names) - len(cells))]
        yield line, dict(zip(names, padded, strict=True))


def read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, row) of a Parquet file (needs the pyarrow package)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"{path}: reading Parquet needs the pyarrow package (pip install pyarrow)"
        ) from None

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    yield from enumerate(rows, start=1)


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a table file chosen by its name: .jsonl/.ndjson/.json (JSON lines), .csv, .tsv, .parquet."""
    name = path.name.removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return read_jsonl(path)
    if name.endswith(".csv"):
        return read_delimited(path, delimiter=",")
    if name.endswith(".tsv"):
        return read_delimited(path, delimiter="\t")
    if name.endswith(".parquet"):
        return read_parquet(path)
    raise DataError(f"{path}: unknown table format; use .jsonl, .csv, .tsv or .parquet")


def location(path: Path, number: int) -> str:
    """'file, line N' (or 'row N' for Parquet) for error messages."""
    return f"{path}, {'row' if path.suffix == '.parquet' else 'line'} {number}"
