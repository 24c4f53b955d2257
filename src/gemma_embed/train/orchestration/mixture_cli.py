"""`gemma-embed mixture-search RECIPE`: propose fine-tuning mixtures by Bayesian optimisation on a dev metric.

As in EmbeddingGemma, the weights of the fine-tuning mixture are searched rather than hand-set: each trial
trains the recipe with its LAST stage's mixture replaced by the trial's weights (over that stage's datasets,
or every data set when the stage names none) and scores the result with the recipe's evaluation tasks on
their dev split (the mean main score). The best `--top-k` mixtures are written for souping, and each trial's
final checkpoint stays in `OUT/trial-NNN/final`, so the best ones can be souped directly:

    gemma-embed mixture-search recipes/finetune.toml --trials 20 --steps 200 --out runs/mix
    gemma-embed soup runs/mix/trial-007/final runs/mix/trial-012/final --out runs/souped

For the paper's setup, point the recipe's `model.init` at a pre-finetuned checkpoint and give it one stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gemma_embed.cli_args import add_out_arg
from gemma_embed.errors import ConfigError
from gemma_embed.train.orchestration.mixture_search import (
    MIXTURES_FILE,
    search_mixtures,
    trial_dir,
    write_mixtures,
)
from gemma_embed.train.recipe import Recipe


def searched_sets(recipe: Recipe) -> list[str]:
    """The datasets whose weights are searched: the last stage's mixture, else every data set."""
    last = recipe.stages[-1]
    return list(last.mixture) or [s.name for s in recipe.data.sets]


def trial_recipe(recipe: Recipe, weights: dict[str, float], steps: int | None) -> Recipe:
    """The recipe with the last stage trained on `weights` (and for `steps` steps when given)."""
    last = dataclasses.replace(
        recipe.stages[-1], mixture=dict(weights), steps=steps or recipe.stages[-1].steps
    )
    return dataclasses.replace(recipe, stages=[*recipe.stages[:-1], last])


def make_objective(recipe: Recipe, out: Path, steps: int | None) -> Callable[[dict[str, float]], float]:
    """mixture -> mean dev main score of a training run on it (trial folders numbered from 0)."""
    from gemma_embed.train.trainer import Trainer  # heavy; only when a search runs

    trials = 0

    def objective(weights: dict[str, float]) -> float:
        nonlocal trials
        folder, trials = trial_dir(out, trials), trials + 1
        summary = Trainer(trial_recipe(recipe, weights, steps), folder).fit()
        scores = summary["final_eval"] or {}
        score = sum(scores.values()) / len(scores) if scores else math.nan
        print(json.dumps({"trial": folder.name, "score": score, "weights": weights}), flush=True)
        return score

    return objective


def run(args: argparse.Namespace) -> int:
    recipe = Recipe.load(args.recipe)
    if not recipe.eval.tasks:
        raise ConfigError(
            f"{args.recipe}: [eval] tasks is empty; mixture search needs a dev metric to optimise"
        )
    out = args.out
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose a new --out folder for the search")
    results = search_mixtures(
        searched_sets(recipe),
        make_objective(recipe, out, args.steps),
        n_trials=args.trials,
        seed=args.seed,
        top_k=args.top_k,
    )
    write_mixtures(results, out / MIXTURES_FILE)
    print(f"best {len(results)} mixtures -> {out / MIXTURES_FILE}")
    for result in results:
        print(f"  {result.score:.4f}  {trial_dir(out, result.trial) / 'final'}  {result.weights}")
    return 0


def register(subparsers: Any) -> None:
    """Add `mixture-search RECIPE --out DIR [--trials N] [--steps N] [--top-k K] [--seed S]`."""
    parser = subparsers.add_parser(
        "mixture-search",
        help="search fine-tuning mixture weights by Bayesian optimisation (optuna) on a dev metric",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", type=Path, help="recipe whose last stage's mixture is searched")
    add_out_arg(parser, type=Path, required=True, help="folder for trials and mixtures.json")
    parser.add_argument("--trials", type=int, default=20, help="training runs in all (default 20)")
    parser.add_argument("--steps", type=int, help="steps of the searched stage per trial (default: recipe)")
    parser.add_argument("--top-k", type=int, default=3, help="mixtures to keep for souping (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the start points and TPE (default 0)")
    parser.set_defaults(func=run)
