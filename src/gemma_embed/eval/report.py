"""Evaluation reports: a markdown table and PNG plots from one or more results files.

Rows are (model, quantization, dim); a task's score is its main score, averaged over the task's subsets
(languages) as MTEB aggregates multilingual tasks; tasks with several subsets also get a per-subset
table. Plots: main score vs Matryoshka dim per task (one line per model and quantization), and, when any
result records a quantization scheme, main score vs quantization scheme at each series' largest dim.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gemma_embed.errors import DataError
from gemma_embed.eval.io import write_atomic, write_text_atomic
from gemma_embed.eval.runner import read_results

NO_QUANTIZATION = "none"


@dataclass(frozen=True)
class Score:
    """One main score of a results file."""

    model: str
    quantization: str
    task: str
    split: str
    subset: str
    dim: int | None
    value: float


def model_label(name_or_path: str) -> str:
    """A short model name: the last two parts of a path or hub id ("models/gemma", "google/embeddinggemma")."""
    return "/".join(Path(name_or_path).parts[-2:]) or name_or_path


def collect(paths: Sequence[Path]) -> list[Score]:
    """Every main score in the results files."""
    scores = []
    for path in paths:
        for result in read_results(path):
            model = model_label(str(result.get("model_name") or path.stem))
            quantization = str(result.get("quantization") or NO_QUANTIZATION)
            for split, entries in result["scores"].items():
                for entry in entries:
                    if "main_score" not in entry:
                        raise DataError(f"{path}: {result['task_name']} {split}: an entry has no main_score")
                    dim = entry.get("dim", result.get("embedding_dim"))
                    scores.append(
                        Score(
                            model,
                            quantization,
                            str(result["task_name"]),
                            split,
                            str(entry.get("hf_subset", "default")),
                            int(dim) if dim is not None else None,
                            float(entry["main_score"]),
                        )
                    )
    if not scores:
        raise DataError(f"no scores in {', '.join(map(str, paths))}")
    return scores


def _order(model: str, quantization: str) -> tuple[str, bool, str]:
    """Sort key: by model, the unquantized baseline before quantized variants."""
    return model, quantization != NO_QUANTIZATION, quantization


def _series_label(model: str, quantization: str) -> str:
    return model if quantization == NO_QUANTIZATION else f"{model} [{quantization}]"


def _averaged(scores: Sequence[Score]) -> dict[tuple[str, str, int | None, str], float]:
    """(model, quantization, dim, task) -> main score averaged over subsets."""
    groups: dict[tuple[str, str, int | None, str], list[float]] = defaultdict(list)
    for s in scores:
        groups[(s.model, s.quantization, s.dim, s.task)].append(s.value)
    return {key: float(np.mean(values)) for key, values in groups.items()}


def _dim_text(dim: int | None) -> str:
    return "full" if dim is None else str(dim)


def markdown(scores: Sequence[Score], figures: Sequence[Path]) -> str:
    """The report as markdown (figures are linked by file name)."""
    averaged = _averaged(scores)
    tasks = list(dict.fromkeys(s.task for s in scores))
    rows = sorted({k[:3] for k in averaged}, key=lambda r: (*_order(r[0], r[1]), -(r[2] or 0)))
    lines = ["# Evaluation report", "", "Main score of each task (mean over its subsets).", ""]
    lines.append("| model | quantization | dim | " + " | ".join(tasks) + " |")
    lines.append("|---|---|---:|" + "---:|" * len(tasks))
    for model, quantization, dim in rows:
        cells = [
            f"{averaged[(model, quantization, dim, t)]:.4f}"
            if (model, quantization, dim, t) in averaged
            else "-"
            for t in tasks
        ]
        lines.append(f"| {model} | {quantization} | {_dim_text(dim)} | " + " | ".join(cells) + " |")
    multi = [t for t in tasks if len({s.subset for s in scores if s.task == t}) > 1]
    if multi:
        lines += [
            "",
            "## Per subset",
            "",
            "| task | subset | model | quantization | dim | score |",
            "|---|---|---|---|---:|---:|",
        ]
        for s in sorted(
            (s for s in scores if s.task in multi),
            key=lambda s: (s.task, s.subset, *_order(s.model, s.quantization), -(s.dim or 0)),
        ):
            lines.append(
                f"| {s.task} | {s.subset} | {s.model} | {s.quantization} | {_dim_text(s.dim)} | {s.value:.4f} |"
            )
    for figure in figures:
        lines += ["", f"![{figure.stem}]({figure.name})"]
    return "\n".join(lines) + "\n"


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, imported lazily (ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write `fig` as PNG atomically and close it."""
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    pyplot().close(fig)
    return path


def _figure_grid(n: int) -> tuple[Any, list[Any]]:
    """A figure and `n` axes in a grid of up to 3 columns."""
    plt = pyplot()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_dims(scores: Sequence[Score], path: Path) -> Path:
    """Main score vs Matryoshka dim, one panel per task, one line per model/quantization."""
    averaged = _averaged(scores)
    tasks = list(dict.fromkeys(s.task for s in scores))
    fig, axes = _figure_grid(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        for (model, quantization, dim, t), value in averaged.items():
            if t == task and dim is not None:
                series[(model, quantization)].append((dim, value))
        ax.set_title(task)
        if not series:
            ax.text(0.5, 0.5, "no embedding dim recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        dims = sorted({d for points in series.values() for d, _ in points})
        for (model, quantization), points in sorted(series.items(), key=lambda item: _order(*item[0])):
            points.sort()
            ax.plot(
                [d for d, _ in points],
                [v for _, v in points],
                marker="o",
                label=_series_label(model, quantization),
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.minorticks_off()
        ax.set_xlabel("embedding dim")
        ax.set_ylabel("main score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Score vs Matryoshka dimension")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_quantization(scores: Sequence[Score], path: Path) -> Path:
    """Main score vs quantization scheme (at each series' largest dim), one panel per task."""
    averaged = _averaged(scores)
    tasks = list(dict.fromkeys(s.task for s in scores))
    schemes = sorted({s.quantization for s in scores}, key=lambda q: (q != NO_QUANTIZATION, q))
    models = sorted({s.model for s in scores})
    fig, axes = _figure_grid(len(tasks))
    width = 0.8 / len(models)
    for ax, task in zip(axes, tasks, strict=True):
        plotted = []
        for m, model in enumerate(models):
            values = []
            for scheme in schemes:
                dims = [d for (mo, q, d, t) in averaged if (mo, q, t) == (model, scheme, task)]
                largest = max(dims, key=lambda d: d or 0) if dims else None
                values.append(averaged[(model, scheme, largest, task)] if dims else np.nan)
            positions = np.arange(len(schemes)) + m * width
            bars = ax.bar(positions, values, width, label=model)
            ax.bar_label(bars, labels=[f"{v:.4f}" if v == v else "" for v in values], fontsize=8)
            for x, v in zip(positions, values, strict=True):
                if v != v:  # NaN: this model has no result for the scheme
                    ax.text(x, 0.5, "n/a", ha="center", va="center", transform=ax.get_xaxis_transform())
            plotted += [v for v in values if v == v]
        ax.set_xticks(np.arange(len(schemes)) + 0.4 - width / 2, schemes)
        ax.set_xlim(-width / 2 - 0.1, len(schemes) - 1 + (len(models) - 0.5) * width + 0.1)
        ax.set_title(task)
        ax.set_xlabel("quantization scheme (at the largest dim)")
        ax.set_ylabel("main score")
        ax.set_ylim(max(0.0, min(plotted) - 0.05), min(1.0, max(plotted) + 0.02))
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Score vs quantization scheme")
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(paths: Sequence[Path], out_dir: Path) -> list[Path]:
    """Write report.md and its plots into `out_dir`; returns the files written (markdown first)."""
    scores = collect(paths)
    figures = [plot_dims(scores, out_dir / "scores_vs_dim.png")]
    if any(s.quantization != NO_QUANTIZATION for s in scores):
        figures.append(plot_quantization(scores, out_dir / "scores_vs_quantization.png"))
    report = write_text_atomic(out_dir / "report.md", markdown(scores, figures))
    return [report, *figures]
