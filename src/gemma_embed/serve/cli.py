"""`gemma-embed serve --model DIR [--host H] [--port P] [--api-key K] [--max-batch-tokens N] ...`.

Binds 127.0.0.1 unless told otherwise. SIGINT/SIGTERM stop accepting connections, let in-flight requests
finish (up to --shutdown-timeout seconds), drain the batcher, then exit.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gemma_embed.cli_args import add_model_args, load_model
from gemma_embed.errors import ConfigError
from gemma_embed.serve.settings import LOOPBACK, ServeSettings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from gemma_embed.encode import Embedder

API_KEY_ENV = "GEMMA_EMBED_API_KEY"


def default_model_name(model: str) -> str:
    """The model id clients see: a checkpoint directory's name, or the name as given (e.g. 'default')."""
    path = Path(model).expanduser()
    return path.resolve().name if path.exists() else model


def uvicorn_config(app: FastAPI, settings: ServeSettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn settings of `serve`: graceful shutdown timeout, access log; `overrides` win."""
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.shutdown_timeout,
        "log_level": "info",
    }
    return uvicorn.Config(app, **{**options, **overrides})


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(embedder: Embedder, settings: ServeSettings) -> None:
    """Serve `embedder` until SIGINT/SIGTERM (blocking)."""
    import uvicorn

    from gemma_embed.serve.app import create_app

    if not is_loopback(settings.host) and settings.api_key is None:
        print(f"warning: serving on {settings.host} without an API key (--api-key)", file=sys.stderr)
    uvicorn.Server(uvicorn_config(create_app(embedder, settings), settings)).run()


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        model_name=args.served_model_name or default_model_name(args.model),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_batch_tokens=args.max_batch_tokens,
        max_inputs=args.max_inputs,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        default_task=args.default_task,
        cors_origins=tuple(args.cors_origin),
        shutdown_timeout=args.shutdown_timeout,
        access_log=args.access_log,
        warm_up=args.warm_up,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)  # bad options fail before the model loads
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    serve(load_model(args), settings)
    return 0


def register(subparsers: Any) -> None:
    """Add the `serve` subcommand."""
    defaults = ServeSettings
    parser = subparsers.add_parser(
        "serve",
        help="HTTP server: OpenAI /v1/embeddings, TEI /embed, /health, /v1/models, /metrics",
        description="Serve a model over HTTP with dynamic batching (see docs/serving.md).",
    )
    add_model_args(parser)
    parser.add_argument(
        "--host", default=LOOPBACK, help="interface to bind (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=defaults.port, help="TCP port (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; unset: no key)",
    )
    parser.add_argument(
        "--served-model-name", help="model id in /v1/models and responses (default: the --model name)"
    )
    parser.add_argument("--default-task", help="prompt name for requests that name none (default: no prompt)")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=defaults.max_batch_tokens,
        help="padded tokens per forward pass; 1 disables batching (default: %(default)s)",
    )
    parser.add_argument(
        "--max-inputs",
        type=int,
        default=defaults.max_inputs,
        help="inputs per request (default: %(default)s)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="inputs waiting for the model before new requests get 503 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=defaults.max_body_bytes,
        help="request body limit (default: %(default)s)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser requests from ORIGIN (repeatable; default: CORS off)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=defaults.shutdown_timeout,
        help="seconds in-flight requests get to finish on shutdown (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of the model (default: torch's choice, one per core); on a shared machine "
        "fewer threads than cores can be much faster",
    )
    parser.add_argument(
        "--access-log", action=argparse.BooleanOptionalAction, default=True, help="log every request"
    )
    parser.add_argument(
        "--warm-up",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one pass per length bucket (kernel compilation) before /health says ok (default: on)",
    )
    parser.set_defaults(func=run)
