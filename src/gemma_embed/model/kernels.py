"""The trunk's elementwise steps, each one function, run fused by `torch.compile` at inference.

Why: on a 2-core AVX-512/AMX CPU the 300m trunk's matrix products run at about 2.4 TFLOP/s in bfloat16,
while eager elementwise ops took two thirds of a forward pass (measured: one RMSNorm over 8192 x 768
bfloat16 values is 7 kernels and 14 ms eager, 1.2 ms compiled). So each step below is written once, in
plain torch, and in `torch.inference_mode` (as `Embedder.encode` runs) it runs as one compiled kernel;
everywhere else (training, no_grad passes such as GradCache's, tracing, exporting) and where compilation
fails (no C++ compiler), the same function runs eagerly.
`GEMMA_EMBED_FUSED=0` turns the compiled kernels off: torch's compiler stack then is never imported, which
keeps about 100 MB out of memory (the low-memory way to run an int4 model) at about half the bf16 speed.

Inputs are flattened to 2-D before a compiled call, so one graph per dtype serves every batch shape.
Inputs under FUSE_MIN_ELEMENTS values run eager: a compiled call costs about 50 us of dispatch (guards,
wrappers), more than the few eager ops on one short query take (measured on an AMD EPYC Zen 4, one thread,
RMSNorm over [25, 768] bfloat16: 100 us compiled, 50 us eager; even at about 128 x 768).
The numerics are the reference's (statistics and gains in float32, one rounding to the activation dtype).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_GELU_C = 2.0 * math.sqrt(2.0 / math.pi)


def _normed(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + weight.float())


def rms_norm_eager(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Gemma's RMSNorm `x * rsqrt(mean(x^2) + eps) * (1 + w)`, in float32, rounded once to x's dtype."""
    return _normed(x, weight, eps).to(x.dtype)


def add_rms_norm_eager(residual: Tensor, x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """`residual + rms_norm(x)`: the sandwich block's post-norm and residual add."""
    return residual + _normed(x, weight, eps).to(x.dtype)


def gelu_tanh_mul_eager(gate: Tensor, up: Tensor) -> Tensor:
    """`gelu_tanh(gate) * up`, with the reference's ops (training's numerics and gradients)."""
    return F.gelu(gate, approximate="tanh") * up


def gelu_tanh_mul_fusable(gate: Tensor, up: Tensor) -> Tensor:
    """The same function for compiling: 0.5 (1 + tanh(z)) = sigmoid(2z), in float32, rounded once; the
    sigmoid form compiles to half the time of tanh."""
    g32 = gate.float()
    gelu = g32 * torch.sigmoid(_GELU_C * (g32 + 0.044715 * g32 * g32 * g32))
    return (gelu * up.float()).to(gate.dtype)


def rotary_eager(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate half-split pairs of x [..., D] by the position angles (cos/sin broadcast against x)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


RECOMPILE_LIMIT = 64
FUSE_MIN_ELEMENTS = 128 * 768
_compiled: dict[str, Callable[..., Tensor]] = {}
_failed: set[str] = set()


def _enabled() -> bool:
    return os.environ.get("GEMMA_EMBED_FUSED", "1") != "0"


def _fast(name: str, source: Callable[..., Tensor], size: int) -> Callable[..., Tensor] | None:
    """The compiled `source` when this call (`size` values) may use it, else None (the caller runs eager)."""
    if (
        size < FUSE_MIN_ELEMENTS
        or not _enabled()  # the checks below import torch's compiler stack (about 100 MB)
        # Inference mode only (as `encode` runs): a plain no_grad pass, e.g. GradCache's, must give the
        # same numbers as the autograd pass that recomputes it.
        or not torch.is_inference_mode_enabled()
        or name in _failed
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    ):
        return None
    if name not in _compiled:
        # Each kernel is recompiled per dtype and per specialized size (1 is), across all models of the
        # process; past torch's default of 8 recompiles a function silently runs eager.
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        _compiled[name] = torch.compile(source, dynamic=True)
    return _compiled[name]


def run_fused(
    name: str, eager: Callable[..., Tensor], *args: object, fusable: Callable[..., Tensor] | None = None
) -> Tensor:
    """`eager(*args)`, as one compiled kernel of `fusable` (default: `eager` itself, else a form of the same
    function that compiles better) when this call may use one (see the module docstring)."""
    first = args[0]
    fast = _fast(name, fusable or eager, first.numel() if isinstance(first, Tensor) else 0)
    if fast is None:
        return eager(*args)
    try:
        return fast(*args)
    except Exception as exc:  # a missing compiler, an unsupported platform: fall back for good, loudly
        result = eager(*args)  # bad inputs fail here too, with the plain code's error, and change nothing
        _failed.add(name)
        warnings.warn(
            f"fused kernel {name} is unavailable ({type(exc).__name__}: {str(exc)[:200]}); running eager "
            "(set GEMMA_EMBED_FUSED=0 to skip the attempt)",
            RuntimeWarning,
            stacklevel=3,
        )
        return result


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    shape = x.shape
    return run_fused("rms_norm", rms_norm_eager, x.reshape(-1, shape[-1]), weight, eps).view(shape)


def add_rms_norm(residual: Tensor, x: Tensor, weight: Tensor, eps: float) -> Tensor:
    shape = x.shape
    flat = (residual.reshape(-1, shape[-1]), x.reshape(-1, shape[-1]))
    return run_fused("add_rms_norm", add_rms_norm_eager, *flat, weight, eps).view(shape)


def gelu_tanh_mul(gate: Tensor, up: Tensor) -> Tensor:
    shape = gate.shape
    flat = gate.reshape(-1, shape[-1]), up.reshape(-1, shape[-1])
    return run_fused("gelu_tanh_mul", gelu_tanh_mul_eager, *flat, fusable=gelu_tanh_mul_fusable).view(shape)


def rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return run_fused("rotary", rotary_eager, x, cos, sin)
