"""`gemma-embed learning-curves RUN ... --out FILE.png`: training loss and dev scores of runs, over steps.

Reads each run's `metrics.jsonl` (written by the trainer: loss lines every `log.every` steps, `eval` lines at
each evaluation) and draws two panels: the total loss, and every evaluated task's dev score. Needs
matplotlib (the `eval` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gemma_embed.cli_args import add_out_arg
from gemma_embed.errors import ConfigError, DataError


def read_metrics(run: Path) -> tuple[list[tuple[int, float]], dict[str, list[tuple[int, float]]]]:
    """(step, total loss) points and, per eval task, (step, score) points of a run folder."""
    from gemma_embed.train.trainer import METRICS  # the trainer is heavy to import; only when plotting

    path = run / METRICS if run.is_dir() else run
    if not path.is_file():
        raise DataError(f"{path}: no metrics file; pass a training run folder")
    losses, scores = [], {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{n}: not a JSON line") from None
        if "total" in record:
            losses.append((record["step"], record["total"]))
        for task, score in record.get("eval", {}).items():
            scores.setdefault(task, []).append((record["step"], score))
    return losses, scores


def plot_curves(runs: list[Path], out: Path, labels: list[str] | None = None) -> Path:
    """Write the two-panel PNG for `runs` (labels default to the run folder names)."""
    from gemma_embed.eval.report import pyplot, save_figure

    try:
        plt = pyplot()
    except ImportError:
        raise ConfigError("learning curves need matplotlib: pip install 'gemma-embed[eval]'") from None
    labels = labels or [run.name for run in runs]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for run, label in zip(runs, labels, strict=True):
        losses, scores = read_metrics(run)
        if losses:
            loss_ax.plot(*zip(*losses, strict=True), label=label)
        for task, points in scores.items():
            score_ax.plot(*zip(*points, strict=True), marker="o", label=f"{label}: {task}")
    loss_ax.set(title="training loss (total)", xlabel="step", yscale="log")
    score_ax.set(title="dev score", xlabel="step")
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, out, dpi=90)


def _run(args: argparse.Namespace) -> int:
    print(plot_curves(args.runs, args.out, args.labels))
    return 0


def register(subparsers: Any) -> None:
    """Add `learning-curves RUN ... --out FILE.png [--labels ...]`."""
    parser = subparsers.add_parser("learning-curves", help="plot training loss and dev scores of runs")
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders (with metrics.jsonl)")
    add_out_arg(parser, type=Path, required=True, help="PNG file to write")
    parser.add_argument("--labels", nargs="+", help="one label per run (default: folder names)")
    parser.set_defaults(func=_run)
