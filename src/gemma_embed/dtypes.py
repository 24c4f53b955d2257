"""Compute dtypes: float32 (exact) and bfloat16 (fast where the hardware has it); float16 is refused because
it overflows.

`dtype=None` asks for the fastest dtype that keeps the stored precision: float32 weights compute in float32;
bfloat16 weights (and quantized ones, whose scales are bfloat16) compute in bfloat16 on CUDA and on a CPU that
computes bfloat16 fast, else in float32 (the bfloat16 weights are upcast exactly at load). Whether a CPU is
fast in bfloat16 is read from its flags (AMX tiles) or measured once: the issue's AVX2-only EPYC emulated
bfloat16 at a sixth of its float32 speed, while an AVX-512 Zen 4 (avx512_bf16) ran the same matrix products
in half float32's time. The measurement is cached per CPU kind and torch version (see `cpu_bf16_choice`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from gemma_embed.errors import UnsupportedDtypeError
from gemma_embed.io.files import write_json

ALIASES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
FLOAT16_REASON = (
    "float16 is not supported: EmbeddingGemma's activations exceed the float16 range (65504) and become inf/NaN; "
    "use dtype='bfloat16' for half-precision speed, or 'float32'"
)
CPU_BF16_ENV = "GEMMA_EMBED_CPU_BF16"  # "1" / "0": skip the probe and say whether this CPU is fast in bf16
CACHE_ENV = "GEMMA_EMBED_CACHE"  # folder of the probe's cache (default: the user cache dir)
PROBE_FILE = "cpu-bf16-probe.json"
# bfloat16 is chosen when its matrix product takes at most this share of float32's: the rest of a forward
# pass (attention softmax, norms) gains less than the products, so a marginal win is not taken.
BF16_MAX_TIME_RATIO = 0.8
# One feed-forward product of the 300m config over 256 tokens: large enough for the vector units, about
# 5 ms in float32 on one Zen 4 core.
PROBE_SHAPE = (256, 768, 1152)
PROBE_REPEATS = 5


@dataclass(frozen=True)
class DtypeChoice:
    """The compute dtype and why it was chosen (shown by `gemma-embed info` and the server's log)."""

    dtype: torch.dtype
    reason: str


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    key = str(dtype).removeprefix("torch.").lower()
    if key in ("float16", "fp16", "half"):
        raise UnsupportedDtypeError(FLOAT16_REASON)
    if key not in ALIASES:
        raise UnsupportedDtypeError(f"dtype {dtype!r} is not supported; use 'float32' or 'bfloat16'")
    return ALIASES[key]


def choose_dtype(
    dtype: str | torch.dtype | None,
    *,
    stored: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> DtypeChoice:
    """The compute dtype for a request (see the module docstring) and the reason for it."""
    if dtype is not None:
        return DtypeChoice(parse_dtype(dtype), "requested")
    if stored != torch.bfloat16:
        return DtypeChoice(torch.float32, "weights stored in float32")
    kind = torch.device(device).type
    if kind != "cpu":
        return DtypeChoice(torch.bfloat16, f"bfloat16 weights on {kind}: computed natively")
    fast, why = cpu_bf16_choice()
    if fast:
        return DtypeChoice(torch.bfloat16, f"bfloat16 weights; this CPU computes bfloat16 fast ({why})")
    return DtypeChoice(
        torch.float32, f"bfloat16 weights upcast to float32: this CPU computes bfloat16 slowly ({why})"
    )


def resolve_dtype(
    dtype: str | torch.dtype | None,
    *,
    stored: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> torch.dtype:
    """The compute dtype of `choose_dtype`, without the reason."""
    return choose_dtype(dtype, stored=stored, device=device).dtype


# ---- is this CPU fast in bfloat16? --------------------------------------------------------------------


def cpu_flags() -> set[str]:
    """The first CPU's feature flags from /proc/cpuinfo (Linux), else empty."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_key() -> str:
    """CPU model, the flags that decide bfloat16 speed, and torch's version: one probe result per key."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # Machines of different kinds report the same model name ("AMD EPYC"): the flags tell them apart.
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2", "bf16", "sve")))
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{name} | {capability} | {' '.join(flags)} | torch {torch.__version__}"


def probe_cache_path() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gemma-embed"
    )
    return Path(root) / PROBE_FILE


def measure_bf16_ratio(shape: tuple[int, int, int] = PROBE_SHAPE, repeats: int = PROBE_REPEATS) -> float:
    """bfloat16 / float32 time of one matrix product of `shape` (rows, in, out), best of `repeats` each,
    interleaved so that a busy neighbour slows both alike."""
    rows, n_in, n_out = shape
    generator = torch.Generator().manual_seed(0)
    x32, w32 = torch.randn(rows, n_in, generator=generator), torch.randn(n_out, n_in, generator=generator)
    pairs = {torch.float32: (x32, w32), torch.bfloat16: (x32.bfloat16(), w32.bfloat16())}
    best = dict.fromkeys(pairs, float("inf"))
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first round warms up (oneDNN primitive creation)
            for dtype, (x, w) in pairs.items():
                start = time.perf_counter()
                torch.nn.functional.linear(x, w)
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.bfloat16] / best[torch.float32]


_choice: tuple[bool, str] | None = None


def cpu_bf16_choice() -> tuple[bool, str]:
    """(whether this CPU computes bfloat16 fast, why): `GEMMA_EMBED_CPU_BF16`, else AMX flags, else the
    cached probe for this CPU kind, else a probe measured now (about 0.1 s) and cached."""
    global _choice
    override = os.environ.get(CPU_BF16_ENV)
    if override in ("0", "1"):
        return override == "1", f"{CPU_BF16_ENV}={override}"
    if _choice is not None:
        return _choice
    flags = cpu_flags()
    if {"amx_bf16", "amx_tile"} <= flags:
        _choice = True, "AMX bfloat16 tiles"
        return _choice
    key, path = cpu_key(), probe_cache_path()
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key) if isinstance(cache, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("bf16_over_fp32"), float):
        ratio, source = entry["bf16_over_fp32"], f"cached probe {path}"
    else:
        ratio, source = measure_bf16_ratio(), "probe"
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = {"bf16_over_fp32": ratio, "shape": list(PROBE_SHAPE)}
        with contextlib.suppress(OSError):  # a read-only home: measure again next process
            write_json(path, cache)
    _choice = ratio <= BF16_MAX_TIME_RATIO, f"{source}: bf16 matmul takes {ratio:.2f}x float32's time"
    return _choice
