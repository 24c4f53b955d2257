"""Machine facts for benchmark results: CPU model, cores, AVX2 / AVX-512 / AMX flags, library versions.

Every bench script that writes a results file records `machine_facts()` in it, so that a timing in the docs
can name the machine it was measured on (three CPU kinds have been used: Intel Xeon with AMX, AMD EPYC with
AVX-512, AMD EPYC with AVX2 only; `kind` says which). Run it alone to print this machine's facts:

    python bench/machine.py
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "numpy", "sentence-transformers", "transformers", "onnxruntime")


def key_values(text: str) -> dict[str, str]:
    """`key: value` lines (lscpu, /proc/cpuinfo) as a dict; the first occurrence of a key wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def cpu_kind(flags: set[str]) -> str:
    """amx, avx512 or avx2 (or other): which of the project's CPU kinds has these flags."""
    if any(f.startswith("amx") for f in flags):
        return "amx"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def machine_facts() -> dict[str, Any]:
    """This machine: CPU model and kind, cores (logical, physical, usable by this process), the AVX2 /
    AVX-512 / AMX flags, and the Python and library versions."""
    cpuinfo = Path("/proc/cpuinfo")
    first_cpu = (
        cpuinfo.read_text(encoding="utf-8", errors="replace").split("\n\n")[0] if cpuinfo.is_file() else ""
    )
    info = key_values(first_cpu)
    lscpu = key_values(subprocess.check_output(["lscpu"], text=True)) if shutil.which("lscpu") else {}
    flags = set((lscpu.get("Flags") or info.get("flags", "")).split())
    physical = None
    if lscpu.get("Core(s) per socket", "").isdigit() and lscpu.get("Socket(s)", "").isdigit():
        physical = int(lscpu["Core(s) per socket"]) * int(lscpu["Socket(s)"])
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": lscpu.get("Model name") or info.get("model name") or platform.processor() or "unknown CPU",
        "kind": cpu_kind(flags),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
        "amx": sorted(f for f in flags if f.startswith("amx")),
        "python": platform.python_version(),
        "versions": versions,
    }


def machine_name(facts: dict[str, Any]) -> str:
    """A file-name-safe machine label: the CPU's first two words and its kind, e.g. `amd-epyc-avx512`."""
    words = [w for w in re.split(r"[^a-z0-9]+", facts["cpu"].lower()) if w and w not in ("r", "tm")]
    return "-".join([*words[:2], facts["kind"]])


def describe(facts: dict[str, Any]) -> list[str]:
    """`machine_facts()` as the lines a benchmark section prints."""
    physical = f", {facts['physical_cores']} physical" if facts["physical_cores"] else ""
    versions = ", ".join(f"{name} {version}" for name, version in facts["versions"].items())
    return [
        f"CPU: {facts['cpu']}; {facts['logical_cores']} logical cores{physical}, {facts['usable_cores']} usable",
        f"AVX-512: {' '.join(facts['avx512']) or 'no'}; AMX: {' '.join(facts['amx']) or 'no'}"
        f"; AVX2: {'yes' if facts['avx2'] else 'no'} (kind: {facts['kind']})",
        f"Python {facts['python']}, {versions}",
    ]


if __name__ == "__main__":
    facts = machine_facts()
    print(json.dumps(facts, indent=2))
    print("\n".join(describe(facts)))
