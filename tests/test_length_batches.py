"""Length bucketing: sorted batches capped by texts and padded tokens; the vectors do not depend on it."""

from __future__ import annotations

import numpy as np
import pytest

import gemma_embed
from gemma_embed.encode import length_batches
from gemma_embed.errors import InputError


def test_batches_respect_both_caps_and_cover_every_index_once():
    lengths = [5, 300, 12, 12, 40, 7, 3000, 1, 64, 64, 64]
    ids = [[0] * n for n in lengths]
    batches = length_batches(ids, batch_size=3, max_batch_tokens=128)
    assert sorted(i for b in batches for i in b) == list(range(len(ids)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * longest <= 128
        assert lengths[batch[0]] == longest  # longest first within each batch
    assert [6] in batches and [1] in batches  # longer than the cap: alone
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return gemma_embed.load(tiny_checkpoint)


def test_vectors_do_not_depend_on_the_batching(model):
    texts = [("word " * n).strip() for n in (1, 50, 3, 30, 7, 70, 2, 15)]
    reference = np.stack([model.encode(t) for t in texts])
    for batch_size, max_batch_tokens in ((32, 2048), (3, 64), (8, 1)):
        out = model.encode(texts, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
        np.testing.assert_allclose(out, reference, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "128"])
def test_bad_max_batch_tokens_is_refused(model, bad):
    with pytest.raises(InputError, match="max_batch_tokens must be a positive integer"):
        model.encode(["a"], max_batch_tokens=bad)
