"""Search training-mixture weights over named datasets by Bayesian optimisation.

EmbeddingGemma fine-tunes on several task mixtures found by Bayesian optimisation and soups the resulting
checkpoints (Schechter Vera et al., 2025, arXiv:2509.20354). Here: optuna's TPE sampler (seeded,
multivariate), started from a grid (the uniform mixture and one near-corner per dataset) plus Dirichlet(1)
samples, then TPE proposals. A trial samples one raw value x_d in [0, 1] per dataset; its mixture is
w_d = x_d / sum(x) (uniform if every x_d is 0). The objective (e.g. a short fine-tune + evaluation) maps a
mixture to a score.

`write_mixtures` stores the best mixtures as JSON for the training and souping recipes; `read_mixtures` loads
them back:

    {"format": "gemma-embed-mixtures", "version": 1,
     "mixtures": [{"rank": 1, "score": 0.71, "trial": 12, "weights": {"retrieval": 0.5, "sts": 0.5}}, ...]}
"""

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from gemma_embed.errors import DataError, InputError
from gemma_embed.io.files import write_json

FORMAT, VERSION = "gemma-embed-mixtures", 1
CORNER_WEIGHT = 0.8  # the near-corner start points give 80% to one dataset and share 20% among the others


MIXTURES_FILE = "mixtures.json"  # the kept mixtures of a search, best first


def trial_dir(out: Path, trial: int) -> Path:
    """The run folder of one trial of a search."""
    return out / f"trial-{trial:03d}"


@dataclass(frozen=True)
class MixtureResult:
    """A mixture (dataset name -> weight, summing to 1), its objective score and the trial that found it."""

    weights: dict[str, float]
    score: float
    trial: int


def _normalize(raw: Sequence[float]) -> list[float]:
    total = sum(raw)
    return [x / total for x in raw] if total > 0 else [1.0 / len(raw)] * len(raw)


def initial_mixtures(n_datasets: int, n_initial: int, seed: int) -> list[list[float]]:
    """The first `n_initial` start points: uniform, one near-corner per dataset, then Dirichlet(1) samples."""
    grid = [[1.0 / n_datasets] * n_datasets]
    if n_datasets > 1:
        rest = (1.0 - CORNER_WEIGHT) / (n_datasets - 1)
        grid += [[CORNER_WEIGHT if d == c else rest for d in range(n_datasets)] for c in range(n_datasets)]
    rng = np.random.default_rng(seed)
    samples = rng.dirichlet(np.ones(n_datasets), size=max(0, n_initial - len(grid)))
    return [*grid, *samples.tolist()][:n_initial]


def search_mixtures(
    dataset_names: Sequence[str],
    objective: Callable[[dict[str, float]], float],
    n_trials: int = 50,
    seed: int = 0,
    n_initial: int | None = None,
    top_k: int = 5,
    *,
    direction: Literal["maximize", "minimize"] = "maximize",
) -> list[MixtureResult]:
    """Run `n_trials` evaluations of `objective` and return the `top_k` best distinct mixtures, best first.

    Args:
        dataset_names: unique dataset names; the keys of every mixture.
        objective: mixture -> score; a non-finite score marks the trial failed (left out of the results).
        n_trials: total evaluations, start points included.
        seed: seeds the Dirichlet start points and the TPE sampler; the same seed gives the same trials.
        n_initial: start points before TPE takes over (default: the grid plus as many Dirichlet samples).
        top_k: how many results to return.
        direction: "maximize" a quality score or "minimize" a loss.
    """
    import optuna  # optional dependency (the `train` extra)

    names = list(dataset_names)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"dataset_names must be unique non-empty strings; got {names}")
    if n_initial is None:
        n_initial = 2 * len(names) + 1 if len(names) > 1 else 1
    if n_trials < 1 or top_k < 1 or n_initial < 0:
        raise InputError(
            f"need n_trials >= 1, top_k >= 1, n_initial >= 0; got {n_trials}, {top_k}, {n_initial}"
        )
    if direction not in ("maximize", "minimize"):
        raise InputError(f"direction must be 'maximize' or 'minimize'; got {direction!r}")
    params = [f"w{d}" for d in range(len(names))]  # positional names: any dataset name is a valid key

    def run_trial(trial: "optuna.Trial") -> float:
        weights = dict(
            zip(names, _normalize([trial.suggest_float(p, 0.0, 1.0) for p in params]), strict=True)
        )
        trial.set_user_attr("weights", weights)
        return float(objective(dict(weights)))

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=n_initial)
        study = optuna.create_study(sampler=sampler, direction=direction)
        for start in initial_mixtures(len(names), min(n_initial, n_trials), seed):
            study.enqueue_trial(dict(zip(params, start, strict=True)))
        study.optimize(run_trial, n_trials=n_trials)
    finally:
        optuna.logging.set_verbosity(verbosity)

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and math.isfinite(t.value)]
    if not done:
        raise InputError("the objective returned no finite score: check the objective function")
    done.sort(key=lambda t: (-t.value if direction == "maximize" else t.value, t.number))
    results: list[MixtureResult] = []
    seen: set[tuple[float, ...]] = set()
    for t in done:
        key = tuple(round(w, 12) for w in t.user_attrs["weights"].values())
        if key not in seen:
            seen.add(key)
            results.append(
                MixtureResult(weights=t.user_attrs["weights"], score=float(t.value), trial=t.number)
            )
    return results[:top_k]


def write_mixtures(results: Sequence[MixtureResult], path: Path) -> Path:
    """Write `results` (best first) as JSON to `path`, atomically (temp file + rename). Returns `path`."""
    path = Path(path)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "mixtures": [
            {"rank": i, "score": r.score, "trial": r.trial, "weights": r.weights}
            for i, r in enumerate(results, 1)
        ],
    }
    write_json(path, doc)
    return path


def read_mixtures(path: Path) -> list[MixtureResult]:
    """Load a file written by `write_mixtures`; DataError naming the file and the problem otherwise."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise ValueError(f"expected format {FORMAT!r} version {VERSION}")
        results = [
            MixtureResult(
                weights={str(k): float(v) for k, v in m["weights"].items()},
                score=float(m["score"]),
                trial=int(m["trial"]),
            )
            for m in doc["mixtures"]
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: not a mixtures file ({e}); write it with write_mixtures") from e
    for r in results:
        if (
            not r.weights
            or any(w < 0 for w in r.weights.values())
            or not math.isclose(sum(r.weights.values()), 1.0)
        ):
            raise DataError(f"{path}: mixture of trial {r.trial} has weights that are not >= 0 summing to 1")
    return results
