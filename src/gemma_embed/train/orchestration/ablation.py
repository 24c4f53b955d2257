"""`gemma-embed ablate FILE`: train variants of one recipe for the same budget and tabulate their test scores.

The paper's ablations (initialization, spread-out regularizer, distillation, ...) at our scale. An ablation
file names a base recipe, a training length and variants; each variant overrides dotted recipe keys:

    base = "recipes/mini/prefinetune.toml"
    steps = 400                                  # every variant's length (the base recipe's stage is cut)
    output = "runs/mini/ablations"
    tasks = ["STSBenchmark", "SciFact", "Banking77Classification"]
    report = "docs/ablations.md"

    [[variants]]
    name = "no spread-out"
    table = "Spread-out regularizer"             # one title or a list; a table compares its variants
    set = { "loss.spread_out_weight" = 0.0 }

Every variant is trained to `output/<slug>/final` (resuming from its checkpoints) and evaluated on the test
split of `tasks` (choices are made on dev data elsewhere; this only reports). A variant whose results file
exists is not run again. `report` gets one markdown table per `table`, and a bar chart next to it (PNG) when
matplotlib is installed. Checkpoints made elsewhere (e.g. the soup and its ingredients) are evaluated, not
trained, through `[[rows]]` entries: { name, table, model = "CHECKPOINT_DIR" }.
"""

from __future__ import annotations

import argparse
import copy
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_embed.errors import ConfigError
from gemma_embed.eval.runner import read_results
from gemma_embed.io.files import atomic_write

RESULTS = "results.json"


@dataclass(frozen=True)
class Variant:
    name: str
    tables: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    model: Path | None = None  # a checkpoint made elsewhere: evaluated, not trained

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass(frozen=True)
class Ablation:
    base: Path
    steps: int
    output: Path
    tasks: list[str]
    report: Path
    variants: list[Variant]

    def results_path(self, variant: Variant) -> Path:
        return self.output / variant.slug / RESULTS


def load_ablation(path: Path) -> Ablation:
    if not path.is_file():
        raise ConfigError(f"{path}: no such ablation file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    allowed = {"base", "steps", "output", "tasks", "report", "variants", "rows"}
    if unknown := set(raw) - allowed:
        raise ConfigError(
            f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = [k for k in ("base", "steps", "output", "tasks", "report") if k not in raw]
    if missing:
        raise ConfigError(f"{path}: missing key {missing[0]!r}")
    for kind, needed in (("variants", ("name",)), ("rows", ("name", "model"))):
        for i, entry in enumerate(raw.get(kind, [])):
            if lacking := [k for k in needed if k not in entry]:
                raise ConfigError(f"{path}: {kind}[{i}] needs the key {lacking[0]!r}")
    variants = [Variant(v["name"], _tables(v), dict(v.get("set", {}))) for v in raw.get("variants", [])]
    variants += [Variant(r["name"], _tables(r), model=Path(r["model"])) for r in raw.get("rows", [])]
    if len({v.slug for v in variants}) != len(variants):
        raise ConfigError(f"{path}: variant names must be distinct")
    return Ablation(
        Path(raw["base"]),
        int(raw["steps"]),
        Path(raw["output"]),
        list(raw["tasks"]),
        Path(raw["report"]),
        variants,
    )


def _tables(entry: dict[str, Any]) -> tuple[str, ...]:
    """`table` is one title or a list of them (a reference row shown in several tables)."""
    table = entry.get("table", "Ablation")
    return (table,) if isinstance(table, str) else tuple(table)


def variant_recipe(base: dict[str, Any], overrides: dict[str, Any], steps: int) -> dict[str, Any]:
    """The base recipe (parsed TOML) with dotted-key overrides; "" removes a key; the stages are cut so that
    they total `steps` (the last stages are dropped or shortened)."""
    recipe = copy.deepcopy(base)
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = recipe
        for part in parents:
            node = node.setdefault(part, {})
        if value == "":
            node.pop(key, None)
        else:
            node[key] = value
    left, stages = steps, []
    for stage in recipe["stages"]:
        if left <= 0:
            break
        stages.append({**stage, "steps": min(stage["steps"], left)})
        left -= stages[-1]["steps"]
    recipe["stages"] = stages
    return recipe


def run_variant(ablation: Ablation, variant: Variant, base: dict[str, Any]) -> Path:
    """Train (resuming) and evaluate one variant; its results file."""
    from gemma_embed.eval import EmbeddingCache, EmbeddingSource, build_task, load_encoder
    from gemma_embed.eval.runner import run_tasks
    from gemma_embed.train.recipe import Recipe
    from gemma_embed.train.trainer import Trainer

    results = ablation.results_path(variant)
    if results.is_file():
        return results
    if variant.model is not None:
        final = variant.model
    else:
        recipe = Recipe.from_dict(variant_recipe(base, variant.overrides, ablation.steps))
        final = Path(Trainer(recipe, ablation.output / variant.slug, resume=True).fit()["final"])
    results.parent.mkdir(parents=True, exist_ok=True)
    # bfloat16 compute: how the shipped model runs, and faster than float32 here
    encoder = load_encoder(str(final), backend="auto", device="cpu", dtype="bfloat16")
    tasks = [build_task(name, split="test") for name in ablation.tasks]
    run_tasks(tasks, EmbeddingSource(encoder, EmbeddingCache(), batch_size=32), output=results)
    return results


def main_scores(path: Path) -> dict[str, float]:
    """Task name -> main score (mean over subsets) of a results file."""
    out = {}
    for task in read_results(path):
        entries = [
            e
            for split in task["scores"].values()
            for e in split
            if e.get("dim") in (None, task.get("embedding_dim"))
        ]
        out[task["task_name"]] = sum(e["main_score"] for e in entries) / len(entries)
    return out


def write_report(ablation: Ablation) -> Path:
    """Markdown tables (one per `table`) of the variants' test scores, plus a bar chart when possible."""
    tables: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for variant in ablation.variants:
        path = ablation.results_path(variant)
        if path.is_file():
            for table in variant.tables:
                tables.setdefault(table, []).append((variant.name, main_scores(path)))
    lines = [
        "# Ablations of gemma-embed-mini",
        "",
        f"Written by `gemma-embed ablate`. Each trained variant runs {ablation.steps} steps of `{ablation.base}` "
        "with one change; scores are on the test splits (nothing was chosen on them), computed in bfloat16.",
        "",
    ]
    for title, rows in tables.items():
        tasks = [t for t in ablation.tasks if any(t in scores for _, scores in rows)]
        lines += [
            f"## {title}",
            "",
            "| variant | " + " | ".join(tasks) + " | mean |",
            "|---" * (len(tasks) + 2) + "|",
        ]
        for name, scores in rows:
            values = [scores.get(t) for t in tasks]
            known = [v for v in values if v is not None]
            cells = [f"{v:.4f}" if v is not None else "-" for v in values]
            mean = f"{sum(known) / len(known):.4f}" if len(known) == len(values) and known else "-"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
        lines.append("")
    chart = _plot(tables, ablation)
    if chart is not None:
        lines += [f"![test scores of the variants]({chart.name})", ""]
    with atomic_write(ablation.report) as handle:
        handle.write("\n".join(lines))
    return ablation.report


def _plot(tables: dict[str, list[tuple[str, dict[str, float]]]], ablation: Ablation) -> Path | None:
    from gemma_embed.eval.report import pyplot, save_figure

    try:
        plt = pyplot()
    except ImportError:
        return None
    if not tables:
        return None
    fig, axes = plt.subplots(
        len(tables), 1, figsize=(8, 2.2 + 0.45 * sum(len(r) for r in tables.values())), squeeze=False
    )
    for ax, (title, rows) in zip(axes[:, 0], tables.items(), strict=True):
        width = 0.8 / len(ablation.tasks)
        for k, task in enumerate(ablation.tasks):
            ys = [i + k * width for i in range(len(rows))]
            ax.barh(ys, [scores.get(task, 0.0) for _, scores in rows], height=width, label=task)
        ax.set_yticks([i + 0.4 - width / 2 for i in range(len(rows))], [name for name, _ in rows])
        ax.set_title(title)
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
    axes[0, 0].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return save_figure(fig, ablation.report.with_suffix(".png"), dpi=90)


def _run(args: argparse.Namespace) -> int:
    ablation = load_ablation(args.file)
    if not ablation.base.is_file():
        raise ConfigError(f"{args.file}: base recipe {ablation.base} does not exist")
    base = tomllib.loads(ablation.base.read_text(encoding="utf-8"))
    chosen = [v for v in ablation.variants if not args.only or v.name in args.only]
    for variant in chosen:
        if not args.report_only:
            print(f"[{variant.name}]", flush=True)
            run_variant(ablation, variant, base)
    print(write_report(ablation))
    return 0


def register(subparsers: Any) -> None:
    """Add `ablate FILE [--only NAME ...] [--report-only]`."""
    parser = subparsers.add_parser(
        "ablate",
        help="train recipe variants for the same budget and tabulate their test scores",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="ablation TOML file (e.g. recipes/mini/ablations.toml)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these variants")
    parser.add_argument("--report-only", action="store_true", help="write the report from finished variants")
    parser.set_defaults(func=_run)
