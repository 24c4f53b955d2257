"""Mixtures of pair datasets and the batch sampler.

As in EmbeddingGemma's fine-tuning, each batch comes from a single dataset of the mixture, chosen at random
in proportion to the mixture weights. The sampler is an endless, seeded stream whose position is a small
JSON-serializable dict (`state_dict`), so training resumes exactly mid-epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gemma_embed.errors import ConfigError, DataError
from gemma_embed.train.data.pairs import Example, PairDataset

# --------------------------------------------------------------------------------------------- mixtures


class Mixture:
    """Weighted datasets.

    weights: one per dataset, or a mapping dataset name -> weight (e.g. a mixture found by
    `gemma_embed.train.orchestration.mixture_search`), or None: len(dataset) ** size_exponent (1.0: proportional to size;
    0.5: square-root balancing; 0.0: uniform). Weights are normalized to sum to 1.
    """

    def __init__(
        self,
        datasets: Sequence[PairDataset],
        weights: Sequence[float] | Mapping[str, float] | None = None,
        *,
        size_exponent: float = 1.0,
    ) -> None:
        if not datasets:
            raise ConfigError("a mixture needs at least one dataset")
        names = [d.name for d in datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"dataset names in a mixture must be unique, got {names}")
        empty = [d.name for d in datasets if len(d) == 0]
        if empty:
            raise ConfigError(f"empty datasets in the mixture: {empty}")
        if weights is None:
            weights = [float(len(d)) ** size_exponent for d in datasets]
        elif isinstance(weights, Mapping):
            if set(weights) != set(names):
                raise ConfigError(
                    f"mixture weights name {sorted(weights)} but the datasets are {sorted(names)}"
                )
            weights = [weights[name] for name in names]
        if len(weights) != len(datasets) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(
                f"mixture weights must be {len(datasets)} non-negative numbers with a positive sum"
            )
        total = float(sum(weights))
        self.datasets = list(datasets)
        self.weights = [float(w) / total for w in weights]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datasets]


@dataclass(frozen=True)
class Batch:
    """One batch from one dataset: texts without prompts, the dataset's prompts, and the mask ids.

    `negatives[i]` holds exactly the sampler's `num_negatives` texts for row i (empty lists when 0).
    """

    dataset: str
    query_prompt: str
    document_prompt: str
    queries: list[str]
    positives: list[str]
    negatives: list[list[str]]
    query_ids: np.ndarray  # int64 [b]
    positive_ids: np.ndarray  # int64 [b]


_STATE_VERSION = 1


class MixtureBatchSampler:
    """Endless seeded stream of single-dataset batches over a mixture, resumable from `state_dict()`.

    Step t draws its dataset with probability proportional to the mixture weight (RNG seeded by (seed, t)).
    Each dataset is walked through seeded permutations, one per pass over it ("cycle"); a dataset smaller
    than `batch_size` gives batches of its whole size, and a pass's last partial batch is dropped.
    With `num_negatives` k > 0 every example must have hard negatives; each row gets k of them, drawn
    without replacement when it has at least k and with replacement otherwise.
    """

    def __init__(self, mixture: Mixture, batch_size: int, *, num_negatives: int = 0, seed: int = 0) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if num_negatives < 0:
            raise ConfigError(f"num_negatives must be >= 0, got {num_negatives}")
        if num_negatives:
            for dataset in mixture.datasets:
                for example, origin in zip(dataset.examples, dataset.origins, strict=True):
                    if not example.negatives:
                        raise DataError(
                            f"{origin}: no hard negative, but the stage uses {num_negatives} per query; "
                            "mine them first (gemma_embed.train.data.mining) or leave this dataset out"
                        )
        self.mixture = mixture
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.seed = seed
        self.step = 0
        self.drawn = [0] * len(mixture.datasets)
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}

    def _batches_per_cycle(self, index: int) -> int:
        return max(1, len(self.mixture.datasets[index]) // self.batch_size)

    def __len__(self) -> int:
        """Batches in one epoch: the full batches of one pass over every dataset (summed over datasets)."""
        return sum(self._batches_per_cycle(i) for i in range(len(self.mixture.datasets)))

    @property
    def epoch(self) -> float:
        """Epochs done so far (steps / len)."""
        return self.step / len(self)

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "datasets": self.mixture.names,
            "sizes": [len(d) for d in self.mixture.datasets],
            "weights": self.mixture.weights,
            "batch_size": self.batch_size,
            "num_negatives": self.num_negatives,
        }

    def state_dict(self) -> dict[str, Any]:
        """Position after the last batch handed out, as a small JSON-serializable dict."""
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "step": self.step,
            "drawn": list(self.drawn),
        } | (self._fingerprint())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()` output; ConfigError if it was saved for a different mixture or batch."""
        if state.get("version") != _STATE_VERSION:
            raise ConfigError(f"sampler state version {state.get('version')!r} is not {_STATE_VERSION}")
        saved = {key: state.get(key) for key in self._fingerprint()}
        if saved != self._fingerprint():
            raise ConfigError(
                "sampler state was saved for another mixture or batch setup; "
                f"saved {saved}, current {self._fingerprint()}"
            )
        self.seed, self.step, self.drawn = (
            int(state["seed"]),
            int(state["step"]),
            [int(n) for n in state["drawn"]],
        )

    def _permutation(self, index: int, cycle: int) -> np.ndarray:
        cached = self._perm_cache.get(index)
        if cached is None or cached[0] != cycle:
            rng = np.random.default_rng([self.seed, 1, index, cycle])
            cached = (cycle, rng.permutation(len(self.mixture.datasets[index])))
            self._perm_cache[index] = cached
        return cached[1]

    def _negatives(self, examples: list[Example], index: int, draw: int) -> list[list[str]]:
        k = self.num_negatives
        if k == 0:
            return [[] for _ in examples]
        rng = np.random.default_rng([self.seed, 2, index, draw])
        out = []
        for example in examples:
            pool = example.negatives
            picks = rng.choice(len(pool), size=k, replace=len(pool) < k)
            out.append([pool[int(p)] for p in picks])
        return out

    def next_batch(self) -> Batch:
        """The batch at the current position; advances the position."""
        choice_rng = np.random.default_rng([self.seed, 0, self.step])
        index = int(choice_rng.choice(len(self.mixture.datasets), p=self.mixture.weights))
        dataset = self.mixture.datasets[index]
        draw = self.drawn[index]
        per_cycle = self._batches_per_cycle(index)
        size = min(self.batch_size, len(dataset))
        start = (draw % per_cycle) * size
        rows = self._permutation(index, draw // per_cycle)[start : start + size]
        examples = [dataset.examples[int(r)] for r in rows]
        batch = Batch(
            dataset=dataset.name,
            query_prompt=dataset.query_prompt,
            document_prompt=dataset.document_prompt,
            queries=[e.query for e in examples],
            positives=[e.positive for e in examples],
            negatives=self._negatives(examples, index, draw),
            query_ids=np.array([e.query_id for e in examples], dtype=np.int64),
            positive_ids=np.array([e.positive_id for e in examples], dtype=np.int64),
        )
        self.drawn[index] += 1
        self.step += 1
        return batch

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()
