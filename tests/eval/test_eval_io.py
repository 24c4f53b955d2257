"""Reading local data files: formats, split files, and DataError on bad input (file, line, problem)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemma_embed.errors import DataError
from gemma_embed.eval.io import find_split_file, read_rows, write_atomic
from gemma_embed.io.tables import read_lines


def test_csv_with_header_and_quotes(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('sentence1,sentence2,score\n"a, quoted",b,1.5\nc,d,2\n', encoding="utf-8")
    rows = read_rows(path, ("sentence1", "sentence2", "score"))
    assert [r.fields["sentence1"] for r in rows] == ["a, quoted", "c"]
    assert [r.line for r in rows] == [2, 3]
    assert rows[0].number("score") == 1.5


def test_tsv_keeps_quotes_inside_text(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text('sentence1\tsentence2\tscore\nsays "hi\tb\t1\n', encoding="utf-8")
    assert read_rows(path, ("sentence1",))[0].fields["sentence1"] == 'says "hi'


def test_headerless_columns_extra_fields_and_crlf(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_bytes(b"g\tf\t2012\t1\t2.5\ts1\ts2\textra\r\ng\tf\t2012\t2\t4\tt1\tt2\r\n")
    columns = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
    rows = read_rows(path, ("score",), columns=columns, delimiter="\t", allow_extra_fields=True)
    assert [r.fields["sentence2"] for r in rows] == ["s2", "t2"]
    with pytest.raises(DataError, match=r"sts\.csv: line 1: expected 7 fields, found 8"):
        read_rows(path, ("score",), columns=columns, delimiter="\t")


def test_jsonl_with_aliases_and_json_array(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(
        '{"sentence1": "x", "sentence2": "y", "label": 3}\n\n{"sentence1": "u", "sentence2": "v", "label": 1}\n'
    )
    rows = read_rows(jsonl, ("sentence1", "score"), aliases={"label": "score"})
    assert [r.line for r in rows] == [1, 3]
    assert rows[0].number("score") == 3.0
    array = tmp_path / "b.json"
    array.write_text(json.dumps([{"text": "a", "label": "x"}]))
    assert read_rows(array, ("text", "label"))[0].text("text") == "a"


def test_missing_column_names_file_line_and_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sentence1,sentence2,similarity\na,b,1\n")
    with pytest.raises(DataError, match=r"bad\.csv: line 2: missing column\(s\) 'score' \(found: "):
        read_rows(path, ("sentence1", "sentence2", "score"))


def test_jsonl_missing_field_on_a_later_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2: missing field\(s\) 'label'"):
        read_rows(path, ("text", "label"))


def test_invalid_json_and_non_object(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: invalid JSON"):
        read_rows(path, ("text",))
    path.write_text('["a"]\n')
    with pytest.raises(DataError, match=r"line 1: expected a JSON object"):
        read_rows(path, ("text",))


def test_empty_file_is_an_empty_split(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text("sentence1,sentence2,score\n")
    with pytest.raises(DataError, match=r"test\.csv: line 2: end of file without any record"):
        read_rows(path, ("sentence1",))


def test_bad_values_name_the_line(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,score\nx,1\ny,high\n")
    rows = read_rows(path, ("score",))
    with pytest.raises(DataError, match=r"s\.csv: line 3: field 'score' must be a number, got 'high'"):
        rows[1].number("score")
    path.write_text("a,score\nx,1.5\n")
    with pytest.raises(DataError, match="must be an integer"):
        read_rows(path, ("score",))[0].integer("score")
    path.write_text("a,score\nx,nan\n")
    with pytest.raises(DataError, match="finite"):
        read_rows(path, ("score",))[0].number("score")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_rows(tmp_path / "nope.csv", ("a",))


def test_find_split_file(tmp_path):
    (tmp_path / "sts-test.csv").write_text("x")
    (tmp_path / "dev.jsonl").write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    assert find_split_file(tmp_path, "test").name == "sts-test.csv"
    assert find_split_file(tmp_path, "validation").name == "dev.jsonl"
    assert find_split_file(tmp_path / "dev.jsonl", "anything").name == "dev.jsonl"
    with pytest.raises(DataError, match="no data file for split 'train'"):
        find_split_file(tmp_path, "train")
    (tmp_path / "test.tsv").write_text("x")
    with pytest.raises(DataError, match="several files match split 'test'"):
        find_split_file(tmp_path, "test")


def test_read_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("one\r\ntwo \u2028 inside\nthree\n".encode())
    assert read_lines(path) == ["one", "two \u2028 inside", "three"]


def test_write_atomic_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "x.npy"
    write_atomic(target, lambda f: np.save(f, np.arange(3), allow_pickle=False))
    assert np.load(target, allow_pickle=False).tolist() == [0, 1, 2]

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert np.load(target, allow_pickle=False).tolist() == [0, 1, 2]
    assert [p.name for p in target.parent.iterdir()] == ["x.npy"]
