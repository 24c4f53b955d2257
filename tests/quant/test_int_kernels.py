"""Quantized products at small batches: the int8 x int8 product (per-row activation codes, per-channel weight
codes) stays within int8 rounding of the dequantized product, shared-input projections equal their one-by-one
results, and the dispatch takes the product only where it is fast and right (CPU, small batches)."""

from __future__ import annotations

import pytest
import torch

from gemma_embed.model.gemma3 import project
from gemma_embed.quant import linear
from gemma_embed.quant.weights import QuantLinear, quantize_tensor


def quantized(bits: int, outlier: bool = True, seed: int = 0, out: int = 192) -> QuantLinear:
    generator = torch.Generator().manual_seed(bits + 10 * seed)
    weight = torch.randn(out, 128, generator=generator) * 0.02
    if outlier:
        weight[:, 5] *= 40  # one outlier column, kept as values beside the blocks
    q = quantize_tensor(weight, bits)
    assert (q.outlier_columns is not None) == outlier
    return QuantLinear(q, torch.bfloat16)


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    return ((got.float() - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [1, 3])
def test_the_int8_product_stays_within_int8_rounding_of_the_dequantized_product(bits, rows, dtype) -> None:
    layer = quantized(bits)
    x = torch.randn(2, rows, 128, generator=torch.Generator().manual_seed(rows))
    x[..., 5] *= 30  # a large activation in the outlier column must not set its row's scale
    reference = x @ layer.quantized().dequantize().T  # float32 throughout
    assert 2 * rows <= linear.int8_product_max_rows(x.device)
    with torch.inference_mode():
        got = layer(x.to(dtype))
    assert got.dtype == dtype and got.shape == reference.shape
    # Two 8-bit roundings (activation row, weight channel) of Gaussian values: about 1% of the norm
    # (0.5% weight-only); without the outlier handling the error is over 10%.
    assert relative_error(got, reference) < 0.025
    assert hasattr(layer, "_channel_int8") and "_channel_int8" not in layer.state_dict()


def test_an_exactly_representable_product_is_exact() -> None:
    """Integer activations and weights whose rows reach +-127: every scale is 1, so the product is exact."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randint(-127, 128, (64, 128), generator=generator).float()
    weight[:, 0] = 127.0
    x = torch.randint(-127, 128, (4, 128), generator=generator).float()
    x[:, 0] = 127.0
    got = linear.int8_linear(x, linear.channel_int8(weight), None, None)
    assert torch.equal(got, x @ weight.T)
    weight[3] = 0.0  # all-zero rows and channels give zeros, not NaN
    x[1] = 0.0
    assert torch.equal(linear.int8_linear(x, linear.channel_int8(weight), None, None), x @ weight.T)


def test_shared_input_projections_equal_one_by_one() -> None:
    layers = tuple(quantized(8, outlier=False, seed=s, out=out) for s, out in enumerate((192, 64, 64)))
    x = torch.randn(1, 5, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        together = project(x, layers)
        alone = tuple(layer(x) for layer in layers)
        assert [t.shape for t in together] == [a.shape for a in alone]
        for t, a in zip(together, alone, strict=True):
            assert torch.equal(t, a)  # the same codes, scales and row scales: bitwise
        with_outliers = (quantized(8), *layers[1:])  # layers with outlier columns run one by one
        for t, layer in zip(project(x, with_outliers), with_outliers, strict=True):
            assert torch.equal(t, layer(x))


def test_dispatch_takes_the_int8_product_only_for_small_cpu_batches(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert linear.int8_product_max_rows(cpu) == linear.INT8_PRODUCT_MAX_ROWS
    assert linear.int8_product_max_rows(torch.device("cuda", 0)) == 0  # GPU: dequantize
    layer = quantized(8)
    with torch.inference_mode():
        layer(torch.randn(linear.INT8_PRODUCT_MAX_ROWS + 1, 128).bfloat16())  # large: dequantize + mm
        assert getattr(layer, "_channel_int8", None) is None
        monkeypatch.setenv(linear.KERNEL_ENV, "0")
        assert linear.int8_product_max_rows(cpu) == 0
        x = torch.randn(1, 128).bfloat16()
        expected = torch.nn.functional.linear(x, layer.quantized().dequantize(torch.bfloat16))
        assert torch.equal(layer(x), expected)
        assert getattr(layer, "_channel_int8", None) is None
