"""Quantization-aware training: the straight-through gradient, forward = PTQ weights, names kept, and a short
`gemma-embed train --qat` run whose float export quantizes to exactly the model it trained."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import gemma_embed
from gemma_embed import cli as main_cli
from gemma_embed.model import EmbeddingModel, preset
from gemma_embed.quant.linear import KERNEL_ENV
from gemma_embed.quant.qat import QATEmbedding, QATLinear, apply_qat, fake_quantize, qat_int4, qat_int8
from gemma_embed.quant.weights import quantization_targets, quantize_model, quantize_tensor
from gemma_embed.train.trainer import load_transform
from helpers import WORDS, random_text

TEXTS = ["the planet mars is red", "protein cell gene disease", "def return value loop", "water on earth"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0) -> EmbeddingModel:
    model = EmbeddingModel(preset("tiny").replace(num_hidden_layers=2)).initialize(seed)
    with torch.no_grad():  # larger than the init so that rounding to int4 matters
        for param in model.parameters():
            param.mul_(5)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(4, 512, (3, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 3:] = 0
    return ids, mask


@pytest.mark.parametrize("bits", [8, 4])
def test_straight_through_gradient(bits: int) -> None:
    """The forward value is the PTQ grid; the gradient reaches the float weight unchanged."""
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = fake_quantize(w, bits)
    assert torch.equal(out, quantize_tensor(w, bits).dequantize())
    upstream = torch.randn(8, 64)
    out.backward(upstream)
    assert torch.equal(w.grad, upstream)

    layer = QATLinear.wrap(torch.nn.Linear(64, 8, bias=False), bits)
    x = torch.randn(5, 64)
    (layer(x) * torch.ones(5, 8)).sum().backward()
    assert torch.allclose(layer.weight.grad, torch.ones(5, 8).T @ x)  # as if the rounded weight were w


@pytest.mark.parametrize("scheme", ["int8", "int4", "mixed"])
def test_qat_forward_equals_the_quantized_model(scheme: str, monkeypatch) -> None:
    """Same parameter names and objects, norms untouched; the output equals the model whose weights are
    replaced by their dequantized codes, and PTQ's QuantLinear/QuantEmbedding model (on its dequantizing
    path: at small batches it otherwise computes an int8 x int8 product, see quant/linear.py)."""
    monkeypatch.setenv(KERNEL_ENV, "0")
    model = tiny_model().eval()
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    rounded, ptq = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for _, module, bits in quantization_targets(rounded, scheme):
            module.weight.copy_(quantize_tensor(module.weight, bits).dequantize())
    quantize_model(ptq, scheme)
    apply_qat(model, scheme)

    assert [n for n, _ in model.named_parameters()] == names
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert isinstance(model.encoder.embed_tokens, QATEmbedding)
    wrapped = {n: m.bits for n, m in model.named_modules() if isinstance(m, QATLinear | QATEmbedding)}
    assert len(wrapped) == 2 * 7 + 1 + 2  # 7 matrices per layer, the embedding table, the head
    assert wrapped["encoder.layers.0.self_attn.q_proj"] == (4 if scheme == "int4" else 8)
    assert wrapped["encoder.layers.0.mlp.up_proj"] == (8 if scheme == "int8" else 4)

    ids, mask = batch()
    with torch.no_grad():
        got, float_out = model(ids, mask), tiny_model()(ids, mask)
        assert torch.equal(got, rounded(ids, mask))
        assert torch.equal(got, ptq(ids, mask))
    assert not torch.equal(got, float_out)


def test_recipe_transform_names_resolve() -> None:
    assert load_transform("gemma_embed.quant.qat:qat_int8") is qat_int8
    assert load_transform("gemma_embed.quant.qat:qat_int4") is qat_int4


def write_recipe(root: Path, tokenizer: Path) -> Path:
    rng = random.Random(0)
    pairs = root / "pairs.jsonl"
    with pairs.open("w", encoding="utf-8") as f:
        for _ in range(32):
            query = random_text(rng, rng.randint(3, 8))
            positive = query.lower().rstrip(".") + " " + " ".join(rng.choice(WORDS) for _ in range(3))
            f.write(json.dumps({"query": query, "positive": positive}) + "\n")
    config = (
        "{ num_hidden_layers = 2, hidden_size = 32, intermediate_size = 64, num_attention_heads = 2, "
        "num_key_value_heads = 1, head_dim = 16, query_pre_attn_scalar = 16, sliding_window = 8, "
        "dense_dims = [64, 32], matryoshka_dims = [32, 16], max_seq_length = 32, max_position_embeddings = 64 }"
    )
    recipe = root / "qat.toml"
    recipe.write_text(
        f"""seed = 1
[model]
preset = "tiny"
config = {config}
[tokenizer]
path = "{tokenizer}"
[[data.sets]]
name = "pairs"
file = "{pairs}"
[[stages]]
name = "pre-finetuning"
steps = 4
batch_size = 8
[optimizer]
lr = 1e-3
warmup_steps = 1
[checkpoint]
every = 0
[eval]
tasks = []
[log]
every = 2
progress = false
""",
        encoding="utf-8",
    )
    return recipe


def test_train_with_qat_exports_a_float_checkpoint_that_quantizes(
    tiny_checkpoint, tmp_path, capsys, monkeypatch
) -> None:
    """`train --qat int4` trains differently from plain training; its final model is an ordinary float
    checkpoint whose int4 PTQ embeds exactly as the QAT forward that was trained (on the dequantizing path)."""
    monkeypatch.setenv(KERNEL_ENV, "0")
    recipe = write_recipe(tmp_path, tiny_checkpoint / "tokenizer.json")
    assert main_cli.main(["train", str(recipe), "--output", str(tmp_path / "qat"), "--qat", "int4"]) == 0
    assert main_cli.main(["train", str(recipe), "--output", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    qat_final, plain_final = tmp_path / "qat" / "final", tmp_path / "plain" / "final"
    qat_tensors, plain_tensors = (load_file(p / "model.safetensors") for p in (qat_final, plain_final))
    assert qat_tensors.keys() == plain_tensors.keys()
    assert all(v.dtype == torch.float32 for v in qat_tensors.values())
    assert not torch.equal(qat_tensors["embed_tokens.weight"], plain_tensors["embed_tokens.weight"])

    assert main_cli.main(["quantize", str(qat_final), "--scheme", "int4", "--out", str(tmp_path / "q4")]) == 0
    quantized = gemma_embed.load(tmp_path / "q4", dtype="float32").encode(TEXTS)
    trained = gemma_embed.load(qat_final)
    qat_int4(trained.model)
    np.testing.assert_allclose(quantized, trained.encode(TEXTS), rtol=0, atol=1e-6)
