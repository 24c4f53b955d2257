"""spread_out_loss against the loop formula 1/(B(B-1)) sum_{i!=j} (x_i . x_j)^2 for q and for p."""

import pytest
import torch

from gemma_embed.errors import InputError
from gemma_embed.losses import spread_out_loss


def reference_spread_out(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for x in (q, p):
        n = x.shape[0]
        unit = [x[i] / x[i].norm() for i in range(n)]
        pairs = [torch.dot(unit[i], unit[j]) ** 2 for i in range(n) for j in range(n) if i != j]
        total = total + torch.stack(pairs).sum() / (n * (n - 1))
    return total


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(6, 8, generator=g, dtype=dtype).requires_grad_() for _ in range(2))


def test_matches_loop_formula_value_and_gradients():
    q, p = _inputs()
    loss, expected = spread_out_loss(q, p), reference_spread_out(q, p)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(loss, (q, p))
    want = torch.autograd.grad(expected, (q, p))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_orthonormal_batch_has_zero_loss_and_identical_rows_have_two():
    eye = torch.eye(4)
    assert spread_out_loss(eye, 3 * eye).item() == pytest.approx(0.0, abs=1e-7)
    same = torch.ones(4, 4)
    assert spread_out_loss(same, same).item() == pytest.approx(2.0, abs=1e-6)


def test_bf16_inputs_are_computed_in_float32():
    q, p = (t.detach().to(torch.bfloat16) for t in _inputs(torch.float32))
    loss = spread_out_loss(q, p)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(
        loss.double(), reference_spread_out(q.double(), p.double()), rtol=1e-5, atol=1e-7
    )


def test_batch_of_one_is_refused():
    with pytest.raises(InputError, match="B >= 2"):
        spread_out_loss(torch.randn(1, 8), torch.randn(1, 8))
