"""The `gemma-embed eval` and `gemma-embed report` subcommands (registered by gemma_embed.cli).

Heavy libraries (sklearn, scipy, matplotlib, sentence-transformers, mteb) are imported only when a
command needs them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gemma_embed.cli_args import add_device_arg, add_out_arg
from gemma_embed.errors import InputError
from gemma_embed.eval.cache import EmbeddingCache
from gemma_embed.eval.embedding import EmbeddingSource
from gemma_embed.eval.encoders import BACKENDS, load_encoder
from gemma_embed.eval.registry import TASKS, build_task, data_root
from gemma_embed.eval.report import write_report
from gemma_embed.eval.runner import EvalTask, format_table, parse_dims, run_tasks
from gemma_embed.eval.tasks import get_task_type


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` and `report` subcommands."""
    ev = subparsers.add_parser(
        "eval",
        help="evaluate a model on MTEB-style tasks",
        description=(
            "Evaluate a gemma-embed checkpoint or a local sentence-transformers model on named tasks "
            "(MTEB equivalents built from ../shared/data) or on local data of one task type. Prints a "
            "table; --output writes MTEB-layout JSON."
        ),
    )
    ev.add_argument(
        "-m",
        "--model",
        default=os.environ.get("GEMMA_EMBED_MODEL", "default"),
        help="gemma-embed checkpoint (directory or name) or sentence-transformers model directory "
        "(default: $GEMMA_EMBED_MODEL or 'default', the shipped model)",
    )
    ev.add_argument("--task", action="extend", nargs="+", default=[], metavar="NAME", help="named task(s)")
    ev.add_argument(
        "--task-type", metavar="TYPE", help="task type of --data (STS, Retrieval, Classification, ...)"
    )
    ev.add_argument("--data", metavar="PATH", help="local data for --task-type (see docs/evaluation.md)")
    ev.add_argument("--name", help="task name recorded for --data (default: TYPE:<data file name>)")
    ev.add_argument("--split", help="split to evaluate (default: the task's MTEB split; 'test' for --data)")
    ev.add_argument(
        "--subset", action="extend", nargs="+", metavar="SUBSET", help="subsets (languages) to run"
    )
    ev.add_argument(
        "--dims", metavar="D1,D2,...", help="Matryoshka dims, e.g. 768,512,256,128 (one encoding)"
    )
    add_out_arg(ev, type=Path, metavar="FILE", help="write results (JSON, MTEB layout)")
    ev.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--backend", choices=BACKENDS, default="auto", help="how to load --model (default: auto)")
    add_device_arg(ev)
    ev.add_argument("--dtype", help="gemma-embed compute dtype (float32 or bfloat16)")
    ev.add_argument("--quantization", metavar="LABEL", help="quantization scheme to record with the results")
    ev.add_argument("--list-tasks", action="store_true", help="list the named tasks and exit")
    ev.set_defaults(func=run_eval)

    rep = subparsers.add_parser(
        "report",
        help="render evaluation results as markdown and plots",
        description="Render results files (gemma-embed eval --output, or MTEB result files) as a markdown "
        "table and PNG plots of score vs Matryoshka dim (and vs quantization scheme when recorded).",
    )
    rep.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json")
    add_out_arg(rep, type=Path, required=True, metavar="DIR", help="output directory")
    rep.set_defaults(func=run_report)


def _list_tasks() -> int:
    print(f"data root: {data_root()}")
    for task in TASKS.values():
        subsets = "discovered on disk" if task.find_subsets else ", ".join(task.subsets)
        note = f"  ({task.note})" if task.note else ""
        print(f"{task.name:30} {task.type:20} split {task.default_split:10} subsets: {subsets}{note}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """`gemma-embed eval`."""
    if args.list_tasks:
        return _list_tasks()
    if not args.model:
        raise InputError("--model is required")
    if bool(args.task) == bool(args.task_type or args.data):
        raise InputError("pass either --task NAME ... or --task-type TYPE --data PATH")
    tasks = _tasks(args)
    dims = parse_dims(args.dims)
    encoder = load_encoder(args.model, backend=args.backend, device=args.device, dtype=args.dtype)
    source = EmbeddingSource(encoder, None if args.no_cache else EmbeddingCache(), batch_size=args.batch_size)
    extra = {"quantization": args.quantization} if args.quantization else {}
    results = run_tasks(tasks, source, dims=dims, extra=extra, output=args.out)
    print(format_table(results))
    print(
        f"encoded {source.encoded} texts, {source.from_cache} read from the embedding cache", file=sys.stderr
    )
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _tasks(args: argparse.Namespace) -> list[EvalTask]:
    if args.task:
        return [build_task(name, split=args.split, subsets=args.subset) for name in args.task]
    if not (args.task_type and args.data):
        raise InputError("--task-type and --data go together")
    if args.subset:
        raise InputError("--subset applies to named tasks only")
    task_type = get_task_type(args.task_type)
    split = args.split or "test"
    name = args.name or f"{task_type.name}:{Path(args.data.split(',')[0]).name}"
    return [EvalTask(name, task_type, split, {"default": lambda: task_type.load(args.data, split)})]


def run_report(args: argparse.Namespace) -> int:
    """`gemma-embed report`."""
    for path in write_report(args.results, args.out):
        print(f"wrote {path}")
    return 0
