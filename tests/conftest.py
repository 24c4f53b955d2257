import os
import sys
from pathlib import Path

# helpers.py is shared by the test modules; the reference libraries must never reach the network.
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest

from helpers import write_random_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight checkpoint of the `tiny` preset (vocab 400) in the standard layout."""
    from gemma_embed.model import preset

    out = tmp_path_factory.mktemp("tiny") / "ckpt"
    return write_random_checkpoint(out, preset("tiny").replace(vocab_size=400), seed=1)
