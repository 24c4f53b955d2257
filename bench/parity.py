"""Print the measured parity of gemma-embed with the reference (sentence-transformers + transformers).

    .venv/bin/python bench/parity.py

Same configs and texts as tests/test_parity.py: fp32 max |difference| and the bf16 path's mean cosine.
"""

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.simplefilter("ignore")

from sentence_transformers import SentenceTransformer  # noqa: E402

from gemma_embed import load  # noqa: E402
from helpers import write_random_checkpoint  # noqa: E402
from test_parity import CONFIGS, mixed_texts  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in CONFIGS.items():
            ckpt = write_random_checkpoint(Path(tmp) / name / "ckpt", config, seed=7)
            texts = mixed_texts(config)
            reference = SentenceTransformer(str(ckpt), device="cpu")
            expected = reference.encode(texts, batch_size=len(texts), prompt_name="query")
            ours = load(ckpt)
            got = ours.encode(texts, task="query", batch_size=len(texts))
            fast = load(ckpt, dtype="bfloat16").encode(texts, task="query")
            cosine = (fast * got).sum(axis=1).mean()
            print(
                f"{name:<12} fp32 max|diff| {np.abs(got - expected).max():.1e}   bf16 mean cosine {cosine:.5f}"
            )


if __name__ == "__main__":
    main()
