"""The fused inference kernels: the same numbers as their eager definitions, used only in inference mode and
for inputs of at least FUSE_MIN_ELEMENTS values, a clean fallback when compilation fails, and
GEMMA_EMBED_FUSED=0 keeps torch's compiler stack out of memory."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from gemma_embed.model import kernels


@pytest.fixture(autouse=True)
def fuse_every_size(monkeypatch):
    """The tests' small tensors take the compiled path (except where a test says otherwise)."""
    monkeypatch.setattr(kernels, "FUSE_MIN_ELEMENTS", 0)


def reference_rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * (1 + w.float())).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernels_match_their_definitions(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 48, generator=g).to(dtype)
    r = torch.randn(3, 5, 48, generator=g).to(dtype)
    w = torch.randn(48, generator=g) * 0.1
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    rtol = 0 if dtype == torch.float32 else 1.6e-2  # bfloat16: rounded once fused, per op eager (2 ulp)
    with torch.inference_mode():
        torch.testing.assert_close(
            kernels.rms_norm(x, w, 1e-6), reference_rms_norm(x, w, 1e-6), atol=tol, rtol=rtol
        )
        torch.testing.assert_close(
            kernels.add_rms_norm(r, x, w, 1e-6), r + reference_rms_norm(x, w, 1e-6), atol=2 * tol, rtol=rtol
        )
        expected = (F.gelu(x.float(), approximate="tanh") * r.float()).to(dtype)
        torch.testing.assert_close(kernels.gelu_tanh_mul(x, r), expected, atol=4 * tol, rtol=rtol)
        heads = torch.randn(3, 5, 2, 48, generator=g).to(dtype)  # [B, L, heads, D], tables [L, 1, D]
        cos, sin = torch.randn(5, 1, 48, generator=g).to(dtype), torch.randn(5, 1, 48, generator=g).to(dtype)
        expected = kernels.rotary_eager(heads, cos, sin)
        torch.testing.assert_close(kernels.rotary(heads, cos, sin), expected, atol=tol, rtol=rtol)
    assert {"rms_norm", "rotary"} <= kernels._compiled.keys() and not kernels._failed
    assert torch._dynamo.config.recompile_limit >= kernels.RECOMPILE_LIMIT  # no silent eager fallback


def test_bad_inputs_raise_the_plain_error_and_keep_the_kernel(monkeypatch):
    monkeypatch.setattr(kernels, "_failed", set())
    with torch.inference_mode(), pytest.raises(RuntimeError, match="size of tensor"):
        kernels.rotary(torch.randn(3, 5, 48), torch.randn(5, 1, 48), torch.randn(5, 1, 48))
    assert not kernels._failed


def test_only_inference_mode_runs_compiled_kernels(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a compiled kernel was used with autograd on")

    monkeypatch.setattr(kernels, "_compiled", {"rms_norm": refuse})
    x = torch.randn(4, 8, requires_grad=True)
    kernels.rms_norm(x, torch.zeros(8), 1e-6).sum().backward()
    assert x.grad is not None
    with torch.no_grad():  # GradCache's first pass must equal its autograd recomputation: eager too
        kernels.rms_norm(x, torch.zeros(8), 1e-6)


def test_inputs_under_the_size_threshold_run_eager(monkeypatch):
    calls = []

    def compiled(x, *args):
        calls.append(x.shape)
        return kernels.rms_norm_eager(x, *args)

    monkeypatch.setattr(kernels, "FUSE_MIN_ELEMENTS", 4 * 8)
    monkeypatch.setattr(kernels, "_compiled", {"rms_norm": compiled})
    w = torch.zeros(8)
    with torch.inference_mode():
        kernels.rms_norm(torch.randn(3, 8), w, 1e-6)
        assert calls == []
        kernels.rms_norm(torch.randn(4, 8), w, 1e-6)  # at the threshold: compiled
    assert calls == [torch.Size([4, 8])]


def test_a_failing_compile_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(kernels, "_compiled", {"gelu_tanh_mul": broken})
    monkeypatch.setattr(kernels, "_failed", set())
    gate, up = torch.randn(6, 10), torch.randn(6, 10)
    with torch.inference_mode(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = kernels.gelu_tanh_mul(gate, up)
        second = kernels.gelu_tanh_mul(gate, up)
    assert [str(w.message).split(" (")[0] for w in caught] == ["fused kernel gelu_tanh_mul is unavailable"]
    torch.testing.assert_close(first, kernels.gelu_tanh_mul_eager(gate, up))
    torch.testing.assert_close(second, first)


def test_disabled_fused_kernels_never_import_the_compiler(tiny_checkpoint):
    code = (
        "import sys, gemma_embed\n"
        f"m = gemma_embed.load({str(tiny_checkpoint)!r})\n"
        "m.encode(['a b c', 'the planet mars is red'])\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    env = {"GEMMA_EMBED_FUSED": "0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
