"""The default compute dtype: float32 weights stay float32; bfloat16 weights compute in bfloat16 on CUDA and
on CPUs that compute it fast (AMX flags or a cached probe), else in float32."""

from __future__ import annotations

import json

import pytest
import torch

from gemma_embed import dtypes
from gemma_embed.errors import UnsupportedDtypeError


class FakeProbe(list):
    """Stands in for the timed measurement: returns `ratio`, appends one entry per call."""

    ratio = 0.5

    def __call__(self, *args: object, **kwargs: object) -> float:
        self.append(1)
        return self.ratio


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No override, no in-process memo, the probe cache in tmp_path, and a counted fake measurement."""
    monkeypatch.delenv(dtypes.CPU_BF16_ENV, raising=False)
    monkeypatch.setenv(dtypes.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(dtypes, "_choice", None)
    monkeypatch.setattr(dtypes, "cpu_flags", lambda: {"avx2", "avx512f"})
    probe = FakeProbe()
    monkeypatch.setattr(dtypes, "measure_bf16_ratio", probe)
    return probe


def test_requested_and_float32_weights_never_probe(fresh) -> None:
    assert dtypes.choose_dtype("bf16", stored=torch.float32).dtype == torch.bfloat16
    assert dtypes.choose_dtype(None, stored=torch.float32).dtype == torch.float32
    assert dtypes.resolve_dtype(None) == torch.float32
    with pytest.raises(UnsupportedDtypeError, match="float16"):
        dtypes.choose_dtype("float16")
    assert fresh == []


def test_cuda_keeps_bfloat16_without_probing_the_cpu(fresh) -> None:
    choice = dtypes.choose_dtype(None, stored=torch.bfloat16, device="cuda")
    assert choice.dtype == torch.bfloat16 and "cuda" in choice.reason
    assert dtypes.choose_dtype(None, stored=torch.bfloat16, device=torch.device("cuda", 0)).dtype == (
        torch.bfloat16
    )
    assert fresh == []


@pytest.mark.parametrize(
    ("ratio", "expected"), [(0.5, torch.bfloat16), (1.0, torch.float32), (6.0, torch.float32)]
)
def test_the_probe_decides_and_is_cached_per_cpu_kind(fresh, monkeypatch, tmp_path, ratio, expected) -> None:
    fresh.ratio = ratio
    choice = dtypes.choose_dtype(None, stored=torch.bfloat16)
    assert choice.dtype == expected and f"{ratio:.2f}x" in choice.reason
    cache = json.loads((tmp_path / dtypes.PROBE_FILE).read_text())
    assert cache[dtypes.cpu_key()]["bf16_over_fp32"] == ratio
    monkeypatch.setattr(dtypes, "_choice", None)  # a new process: reads the cache, does not measure again
    again = dtypes.choose_dtype(None, stored=torch.bfloat16)
    assert again.dtype == expected and "cached" in again.reason and len(fresh) == 1


def test_amx_needs_no_probe_and_the_environment_overrides(fresh, monkeypatch) -> None:
    monkeypatch.setattr(dtypes, "cpu_flags", lambda: {"amx_bf16", "amx_tile", "avx512_bf16"})
    choice = dtypes.choose_dtype(None, stored=torch.bfloat16)
    assert choice.dtype == torch.bfloat16 and "AMX" in choice.reason and fresh == []
    monkeypatch.setenv(dtypes.CPU_BF16_ENV, "0")
    assert dtypes.choose_dtype(None, stored=torch.bfloat16).dtype == torch.float32


def test_an_unwritable_cache_still_chooses(fresh, monkeypatch, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(dtypes.CACHE_ENV, str(blocker))  # a file where the folder should be
    assert dtypes.choose_dtype(None, stored=torch.bfloat16).dtype == torch.bfloat16


def test_the_real_probe_returns_a_positive_ratio() -> None:
    assert dtypes.measure_bf16_ratio((8, 64, 64), repeats=1) > 0
