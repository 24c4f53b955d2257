"""Mixture search: seeded TPE from grid + Dirichlet start points finds a known optimum, deterministically."""

import json
import math

import pytest

from gemma_embed.errors import DataError, InputError
from gemma_embed.train.orchestration.mixture_search import (
    MixtureResult,
    initial_mixtures,
    read_mixtures,
    search_mixtures,
    write_mixtures,
)

TARGET = {"retrieval": 0.4, "sts": 0.3, "classification": 0.2, "code": 0.1}


def distance_to_target(weights: dict[str, float]) -> float:
    return sum((weights[k] - v) ** 2 for k, v in TARGET.items())


def test_search_finds_the_known_optimum_and_is_deterministic():
    seen = []

    def objective(weights):
        seen.append(weights)
        return -distance_to_target(weights)

    results = search_mixtures(list(TARGET), objective, n_trials=40, seed=0, top_k=3)
    best = results[0]
    assert max(abs(best.weights[k] - v) for k, v in TARGET.items()) < 0.05
    assert best.trial >= 2 * len(TARGET) + 1  # found by TPE, not by a start point
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert len(seen) == 40
    for w in seen:
        assert list(w) == list(TARGET) and min(w.values()) >= 0 and math.isclose(sum(w.values()), 1.0)
    # The start points: uniform first, then one near-corner per dataset.
    assert seen[0] == pytest.approx(dict.fromkeys(TARGET, 0.25))
    assert [max(w, key=w.get) for w in seen[1:5]] == list(TARGET)
    assert (
        search_mixtures(list(TARGET), lambda w: -distance_to_target(w), n_trials=40, seed=0, top_k=3)
        == results
    )


def test_minimize_and_failed_trials():
    def loss(weights):
        return math.nan if weights["sts"] > 0.5 else distance_to_target(weights)

    results = search_mixtures(list(TARGET), loss, n_trials=15, seed=1, top_k=20, direction="minimize")
    assert [r.score for r in results] == sorted(r.score for r in results)
    assert all(math.isfinite(r.score) and r.weights["sts"] <= 0.5 for r in results)
    with pytest.raises(InputError, match="no finite score"):
        search_mixtures(["a", "b"], lambda w: math.nan, n_trials=3)


def test_initial_mixtures_grid_then_dirichlet():
    starts = initial_mixtures(3, 6, seed=0)
    grid = [[1 / 3] * 3, [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]
    assert all(s == pytest.approx(g) for s, g in zip(starts, grid, strict=False))
    assert len(starts) == 6 and all(math.isclose(sum(s), 1.0) and min(s) >= 0 for s in starts)
    assert initial_mixtures(3, 6, seed=0) == starts and initial_mixtures(3, 6, seed=1)[4:] != starts[4:]
    assert initial_mixtures(3, 2, seed=0) == starts[:2]


@pytest.mark.parametrize("names", [[], ["a", "a"], ["a", ""]])
def test_bad_dataset_names_are_refused(names):
    with pytest.raises(InputError, match="dataset_names"):
        search_mixtures(names, lambda w: 0.0, n_trials=2)


def test_write_and_read_mixtures_round_trip_atomically(tmp_path):
    results = [MixtureResult({"a": 0.75, "b": 0.25}, 0.9, 12), MixtureResult({"a": 0.5, "b": 0.5}, 0.8, 3)]
    path = tmp_path / "recipes" / "mixtures.json"
    assert write_mixtures(results, path) == path
    doc = json.loads(path.read_text())
    assert doc["format"] == "gemma-embed-mixtures" and [m["rank"] for m in doc["mixtures"]] == [1, 2]
    assert read_mixtures(path) == results
    write_mixtures(results[:1], path)  # replaces the file
    assert read_mixtures(path) == results[:1]
    assert [p.name for p in path.parent.iterdir()] == ["mixtures.json"]


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"format": "other", "version": 1, "mixtures": []}),
        json.dumps({"format": "gemma-embed-mixtures", "version": 1, "mixtures": [{"weights": {"a": 1}}]}),
        json.dumps(
            {
                "format": "gemma-embed-mixtures",
                "version": 1,
                "mixtures": [{"weights": {"a": 2}, "score": 1, "trial": 0}],
            }
        ),
    ],
    ids=["not_json", "wrong_format", "missing_fields", "not_normalised"],
)
def test_read_mixtures_refuses_bad_files(tmp_path, content):
    path = tmp_path / "mixtures.json"
    path.write_text(content)
    with pytest.raises(DataError, match=r"mixtures\.json"):
        read_mixtures(path)
