"""Outlier input columns stay out of the blocks: found only where a column dwarfs the others, stored in
bfloat16 beside the codes, the same in PTQ, QAT and after a save/load round trip, and checked on load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import gemma_embed
from gemma_embed.errors import CheckpointError
from gemma_embed.io.checkpoint import save_quantized
from gemma_embed.quant.qat import QATEmbedding
from gemma_embed.quant.weights import (
    MANIFEST,
    OUTLIER_COLUMNS,
    OUTLIER_VALUES,
    outlier_columns,
    quantize_tensor,
)


def table_with_outlier(rows: int = 200, cols: int = 64, column: int = 63) -> torch.Tensor:
    """Rows like the static warm start's: small coordinates and one norm-completing column near 1."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(rows, cols, generator=g) * 0.02
    table[:, column] = 0.9 + 0.05 * torch.rand(rows, generator=g)
    return table


def test_gaussian_weights_have_no_outliers_and_one_big_column_is_found():
    assert outlier_columns(torch.randn(512, 768) * 0.02) is None
    assert outlier_columns(table_with_outlier()).tolist() == [63]


@pytest.mark.parametrize("bits", [4, 8])
def test_the_outlier_no_longer_crushes_its_block(bits):
    table = table_with_outlier()
    q = quantize_tensor(table, bits)
    assert q.outlier_columns.tolist() == [63] and q.outlier_values.dtype == torch.bfloat16
    restored = q.dequantize()
    block = slice(32, 63)  # the outlier's block-mates
    error = (restored[:, block] - table[:, block]).abs().mean() / table[:, block].abs().mean()
    assert error < (0.2 if bits == 4 else 0.01)
    torch.testing.assert_close(restored[:, 63], table[:, 63].to(torch.bfloat16).float())
    # Without the outlier handling the block-mates would round to zero at int4.
    crushed = table[:, 32:64].abs().amax(-1, keepdim=True) / 7
    assert bits == 8 or bool((table[:, block].abs() < crushed / 2).float().mean() > 0.9)


def test_rows_dequantize_like_the_whole_table():
    q = quantize_tensor(table_with_outlier(), 4)
    rows = torch.tensor([[3, 7], [150, 3]])
    torch.testing.assert_close(q.dequantize(rows=rows), q.dequantize()[rows])


def test_qat_embedding_uses_the_whole_tables_outliers():
    embedding = torch.nn.Embedding(200, 64)
    with torch.no_grad():
        embedding.weight.copy_(table_with_outlier())
    qat = QATEmbedding.wrap(embedding, 4)
    ids = torch.tensor([[1, 5, 9]])
    expected = quantize_tensor(embedding.weight, 4).dequantize()[ids]
    torch.testing.assert_close(qat(ids), expected)


@pytest.fixture()
def outlier_checkpoint(tiny_checkpoint, tmp_path):
    model = gemma_embed.load(tiny_checkpoint, dtype="float32")
    with torch.no_grad():
        weight = model.model.encoder.embed_tokens.weight
        weight[:, -1] = 0.9 * weight.abs().max() * 20
    return model, save_quantized(model.checkpoint, "int4", tmp_path / "q4")


def test_outliers_survive_save_and_load(outlier_checkpoint):
    model, out = outlier_checkpoint
    stored = load_file(str(out / "model.safetensors"))
    assert stored["embed_tokens.weight" + OUTLIER_COLUMNS].tolist() == [model.config.hidden_size - 1]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["version"] == 3 and manifest["tensors"]["embed_tokens.weight"]["outlier_columns"] == 1
    loaded = gemma_embed.load(out, dtype="float32")
    direct = quantize_tensor(model.model.encoder.embed_tokens.weight, 4).dequantize()
    torch.testing.assert_close(loaded.model.encoder.embed_tokens.quantized().dequantize(), direct)


def test_outlier_values_that_do_not_fit_are_refused(outlier_checkpoint):
    _, out = outlier_checkpoint
    path = out / "model.safetensors"
    tensors = load_file(str(path))
    name = "embed_tokens.weight" + OUTLIER_VALUES
    tensors[name] = tensors[name][:-1]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"outlier columns/values of 'embed_tokens\.weight' do not fit"):
        gemma_embed.load(out)
