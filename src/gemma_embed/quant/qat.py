"""Quantization-aware training (QAT): train through the per-block int8 / int4 / mixed weight formats.

A QAT model computes its forward pass with fake-quantized weights, `dequantize(quantize(w))`, using exactly
the block math of `gemma_embed.quant.weights` (symmetric, block 32 along the input dim, bfloat16 scales,
the int4 clipping search), so what the network is trained against is bit for bit what
`gemma-embed quantize` later stores. The backward pass is the straight-through estimator: the gradient
with respect to the fake-quantized weight is passed unchanged to the float weight, which keeps learning.

The transform swaps the scheme's layers (`quantization_targets`: the module table of
`gemma_embed.quant.weights`) for `QATLinear` / `QATEmbedding`, subclasses that hold the *same* `weight`
parameter under the same name. State dicts, optimizers, DDP/FSDP, resumable checkpoints and the trainer's
export therefore see an ordinary float model: an exported checkpoint is a normal float checkpoint (the
fake quantization lives only in the forward code, never in the weights), and `gemma-embed quantize` on it
gives the post-training-quantized QAT model.

Usage: `gemma-embed train RECIPE --qat int4`, or in a recipe `[model] transform =
"gemma_embed.quant.qat:qat_int4"` (also `qat_int8`, `qat_mixed`), or `Trainer(..., model_transform=qat_int4)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gemma_embed.quant.weights import outlier_columns, quantization_targets, quantize_tensor, replace_module

M = TypeVar("M", bound=nn.Module)


class _StraightThrough(torch.autograd.Function):
    """Forward: the dequantized per-block quantization of a 2-D weight. Backward: the identity."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, bits: int, columns: Tensor | None) -> Tensor:
        return quantize_tensor(weight, bits, columns=columns).dequantize(weight.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


def fake_quantize(weight: Tensor, bits: int, columns: Tensor | None = None) -> Tensor:
    """`weight` [out, in] rounded to the `bits`-bit per-block grid (the values PTQ stores), with a
    straight-through gradient: d(fake_quantize(w))/dw is taken as the identity. `columns`: the outlier
    columns of the whole matrix when `weight` is some of its rows (see `quantize_tensor`)."""
    return _StraightThrough.apply(weight, bits, columns)


class QATLinear(nn.Linear):
    """A bias-free `nn.Linear` whose forward uses the fake-quantized weight; `weight` stays the float parameter."""

    bits: int

    @classmethod
    def wrap(cls, linear: nn.Linear, bits: int) -> QATLinear:
        """A QATLinear that shares `linear`'s weight parameter (no copy)."""
        module = cls(linear.in_features, linear.out_features, bias=False, device="meta")
        module.weight = linear.weight
        module.bits = bits
        return module

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, fake_quantize(self.weight, self.bits))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, qat_bits={self.bits}"


class QATEmbedding(nn.Embedding):
    """An `nn.Embedding` whose looked-up rows are fake-quantized; `weight` stays the float parameter.

    Blocks run along the hidden dim, so quantizing only the looked-up rows (with the outlier columns of
    the whole table) gives the same values as quantizing the whole table, at a batch's cost.
    """

    bits: int

    @classmethod
    def wrap(cls, embedding: nn.Embedding, bits: int) -> QATEmbedding:
        """A QATEmbedding that shares `embedding`'s weight parameter and options (no copy)."""
        module = cls(
            embedding.num_embeddings,
            embedding.embedding_dim,
            padding_idx=embedding.padding_idx,
            max_norm=embedding.max_norm,
            norm_type=embedding.norm_type,
            scale_grad_by_freq=embedding.scale_grad_by_freq,
            sparse=embedding.sparse,
            device="meta",
        )
        module.weight = embedding.weight
        module.bits = bits
        return module

    def forward(self, input_ids: Tensor) -> Tensor:
        rows = super().forward(input_ids)
        columns = outlier_columns(self.weight)  # of the whole table, as PTQ finds them
        return fake_quantize(rows.reshape(-1, rows.shape[-1]), self.bits, columns).reshape(rows.shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, qat_bits={self.bits}"


def apply_qat(model: M, scheme: str) -> M:
    """Make `model` train through `scheme` ("int8", "int4" or "mixed"), in place; returns the model.

    Every layer the scheme quantizes becomes a QATLinear / QATEmbedding with the scheme's bits (norms stay
    float); parameter names and objects are unchanged. Applying it again switches to the new scheme.
    """
    for name, module, bits in quantization_targets(model, scheme):
        wrapper = QATEmbedding if isinstance(module, nn.Embedding) else QATLinear
        replace_module(model, name, wrapper.wrap(module, bits))
    return model


def qat_int8(model: M) -> M:
    """Model transform: QAT for per-block int8 weights (`[model] transform = "gemma_embed.quant.qat:qat_int8"`)."""
    return apply_qat(model, "int8")


def qat_int4(model: M) -> M:
    """Model transform: QAT for per-block int4 weights (`[model] transform = "gemma_embed.quant.qat:qat_int4"`)."""
    return apply_qat(model, "int4")


def qat_mixed(model: M) -> M:
    """Model transform: QAT for the mixed scheme, int4 with int8 attention (`...qat:qat_mixed`)."""
    return apply_qat(model, "mixed")


QAT_TRANSFORMS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "int8": qat_int8,
    "int4": qat_int4,
    "mixed": qat_mixed,
}
