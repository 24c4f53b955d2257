"""embed-corpus: inputs, shards, resume, precisions and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from gemma_embed.errors import DataError
from gemma_embed.eval.encoders import load_encoder
from gemma_embed.search.corpus import (
    EmbedJob,
    Fields,
    embed_corpus,
    read_documents,
    read_embeddings,
    shard_path,
)
from gemma_embed.search.vectors import dequantize, quantize


def expected_vectors(model: Path, docs: list[dict[str, str]], dim: int | None = None) -> np.ndarray:
    encoder = load_encoder(str(model))
    prompt = encoder.prompts["document"]
    texts = [f"{d['title']} {d['text']}".strip() if d["title"] else d["text"] for d in docs]
    out = encoder.encode(texts, prompt=prompt, batch_size=32)[:, : dim or None]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_shards_match_direct_encoding_and_resume(
    docs_rows: list[dict[str, str]], tiny_checkpoint: Path, docs_jsonl: Path, tmp_path: Path
) -> None:
    out = tmp_path / "emb"
    job = EmbedJob(str(tiny_checkpoint), dim=32, shard_size=3)
    manifest = embed_corpus(docs_jsonl, out, job, progress=False)
    assert manifest["shards"] == 3 and manifest["count"] == 7 and manifest["dim"] == 32
    corpus = read_embeddings(out)
    assert [d.id for d in corpus.docs] == [d["id"] for d in docs_rows]
    np.testing.assert_allclose(corpus.vectors, expected_vectors(tiny_checkpoint, docs_rows, 32), atol=1e-5)

    # Resume: finished shards are kept as they are, a missing one is written again.
    kept = shard_path(out, 0).stat().st_mtime_ns
    shard_path(out, 1).unlink()
    embed_corpus(docs_jsonl, out, job, progress=False)
    assert shard_path(out, 0).stat().st_mtime_ns == kept
    np.testing.assert_allclose(read_embeddings(out).vectors, corpus.vectors, atol=1e-6)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind

    # Another job into the same folder is refused.
    with pytest.raises(DataError, match="another job"):
        embed_corpus(docs_jsonl, out, EmbedJob(str(tiny_checkpoint), dim=16, shard_size=3), progress=False)


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_quantized_precisions(
    docs_rows: list[dict[str, str]], tiny_checkpoint: Path, docs_jsonl: Path, tmp_path: Path, precision: str
) -> None:
    embed_corpus(
        docs_jsonl, tmp_path / "e", EmbedJob(str(tiny_checkpoint), precision=precision), progress=False
    )
    vectors = read_embeddings(tmp_path / "e").vectors
    full = expected_vectors(tiny_checkpoint, docs_rows)
    np.testing.assert_allclose(vectors, dequantize(quantize(full, precision), precision, 64), atol=1e-5)
    assert np.all(np.sum(vectors * full, axis=1) > (0.99 if precision == "int8" else 0.5))


def test_csv_parquet_and_folder_inputs(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp_path / "docs.csv"
    csv.write_text("doc,body\n1,hello world\n2,second text\n", encoding="utf-8")
    docs = read_documents(csv, Fields(id="doc", text="body", title=None))
    assert [(d.id, d.text) for d in docs] == [("1", "hello world"), ("2", "second text")]

    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"_id": ["a"], "title": ["T"], "text": ["body"]}), parquet)
    (doc,) = read_documents(parquet)
    assert (doc.id, doc.embedded_text) == ("a", "T body")

    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha", encoding="utf-8")
    (folder / "sub" / "b.md").write_text("# beta", encoding="utf-8")
    (folder / "skip.bin").write_bytes(b"\0")
    assert [(d.id, d.text) for d in read_documents(folder)] == [("a.txt", "alpha"), ("sub/b.md", "# beta")]


def test_bad_input_is_one_line_error(run_cli, tiny_checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "body": "x"}) + "\n", encoding="utf-8")
    code, _, err = run_cli("embed-corpus", bad, tmp_path / "o", "-m", tiny_checkpoint, "-q")
    assert code == 2 and err.count("\n") == 1
    assert "missing column 'text'" in err and "--text-field" in err

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    code, _, err = run_cli("embed-corpus", empty, tmp_path / "o", "-m", tiny_checkpoint, "-q")
    assert code == 2 and "corpus is empty" in err and err.count("\n") == 1

    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    code, _, err = run_cli("index", "build", empty_dir, "--out", tmp_path / "i", "-m", tiny_checkpoint)
    assert code == 2 and "corpus is empty" in err
    assert not os.path.exists(tmp_path / "i")


def test_cli_embed_corpus(run_cli, tiny_checkpoint: Path, docs_jsonl: Path, tmp_path: Path) -> None:
    code, out, _ = run_cli(
        "embed-corpus",
        docs_jsonl,
        tmp_path / "e",
        "-m",
        tiny_checkpoint,
        "--dim",
        "16",
        "--shard-size",
        "4",
        "-q",
    )
    assert code == 0 and "7 documents in 2 shard(s)" in out
    assert read_embeddings(tmp_path / "e").vectors.shape == (7, 16)
