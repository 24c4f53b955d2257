"""Load on loopback with bench/load_test.py: 16 clients, 2,000 requests per mode, zero errors, batching seen.

Timings are printed (run with -s), never asserted: they depend on the machine and on what else runs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench" / "load_test.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("load_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_load_batched_and_unbatched(tiny_checkpoint):
    unbatched, batched = load_bench().compare(str(tiny_checkpoint), clients=16, requests=2000)
    for result in (unbatched, batched):
        print(result)
        assert result.errors == 0
    assert unbatched.batches == 2000 and unbatched.batches_over_1 == 0
    assert batched.batches_over_1 > 0 and batched.mean_batch > 1
