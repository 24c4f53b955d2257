"""The static fit at corpus scale: Jacobi-preconditioned CG solves the ridge normal equations, and the
`--model-out` checkpoint computes the fit as a saved model."""

import numpy as np
import pytest
import torch

from gemma_embed.io.checkpoint import load_checkpoint
from gemma_embed.io.tokenizer import TextTokenizer
from gemma_embed.model import preset
from gemma_embed.train.init.static import fit_static, ridge_fit, static_model, token_bags
from helpers import build_tokenizer


def test_preconditioned_cg_reaches_the_closed_form_on_badly_scaled_columns() -> None:
    gen = torch.Generator().manual_seed(0)
    # Column scales over three orders of magnitude, like frequent vs rare tokens.
    scale = torch.logspace(0, -3, 60)
    dense = torch.rand(500, 60, generator=gen) * (torch.rand(500, 60, generator=gen) < 0.3) * scale
    targets = torch.randn(500, 6, generator=gen)
    l2 = 1e-3
    lam = l2 * float((dense.to_sparse_csr().values() ** 2).sum()) / 60
    closed = torch.linalg.solve(
        dense.double().T @ dense.double() + lam * torch.eye(60, dtype=torch.float64),
        dense.double().T @ targets.double(),
    )
    fitted = ridge_fit(dense.to_sparse_csr(), targets, l2=l2, iters=400, tol=1e-7)
    # float32 CG against a float64 solve: compare the predictions, which is what the fit is used for.
    torch.testing.assert_close((dense @ fitted).double(), dense.double() @ closed, atol=1e-3, rtol=1e-3)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    path = build_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=preset("tiny").vocab_size)
    return TextTokenizer.from_file(path, bos_id=2, eos_id=1, pad_id=0, max_length=64)


def test_static_model_checkpoint_computes_the_fit(tokenizer: TextTokenizer, tmp_path) -> None:
    texts = [f"word{i % 17} thing{i % 5} item{i % 11}" for i in range(300)]
    targets = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    fit = fit_static(tokenizer, texts, targets)
    checkpoint = static_model(fit, tokenizer, "tiny")
    from gemma_embed.io.checkpoint import save_checkpoint

    save_checkpoint(checkpoint, tmp_path / "model")
    loaded = load_checkpoint(tmp_path / "model", dtype=torch.float32)
    sample = texts[:5]
    ids, _ = loaded.tokenizer.encode(sample)
    batch = loaded.tokenizer.pad(ids)
    with torch.no_grad():
        got = loaded.model.eval()(batch.input_ids, batch.attention_mask)
    keep = fit["directions"][:, : preset("tiny").hidden_size - 1]
    expected = torch.nn.functional.normalize(
        token_bags(tokenizer, sample, prompts=()) @ fit["vectors"] @ keep @ keep.T
    )
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)  # float32 sums in another order
