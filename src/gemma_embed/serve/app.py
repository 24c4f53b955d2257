"""The FastAPI app: OpenAI and TEI embedding routes over one batcher, health, models, metrics, middleware.

Both embedding routes share `EmbeddingService`: validation (counts, empty strings, prompt, Matryoshka dim,
token limits) runs in the thread pool, because tokenizing a large body would stall the event loop; the
model runs only in the batcher's worker thread; the event loop only awaits results.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse, Response

from gemma_embed import __version__
from gemma_embed.encode import Embedder
from gemma_embed.errors import ConfigError, InputError
from gemma_embed.model.head import truncate_and_normalize
from gemma_embed.serve.batcher import Batcher, Overloaded
from gemma_embed.serve.errors import APIError, InternalErrorMiddleware, install_error_handlers
from gemma_embed.serve.guards import ApiKeyMiddleware, BodyLimitMiddleware
from gemma_embed.serve.metrics import Metrics, MetricsMiddleware
from gemma_embed.serve.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    EmbedRequest,
    ErrorResponse,
    Health,
    Inputs,
    ModelList,
)
from gemma_embed.serve.settings import ServeSettings

# Requests opt in to truncation (truncate=true) and are refused otherwise, so encode's advice is noise here.
warnings.filterwarnings("ignore", message=r".*exceed max_seq_length", category=UserWarning, module=__name__)

logger = logging.getLogger("uvicorn.error")  # uvicorn's own logger: shown with its startup lines
# Warm-up passes, in tokens per text (capped by the model's and the server's limits): each length once alone
# (the unmasked attention path) and once beside a one-word text (the padded, masked path). Compilation of the
# fused kernels and oneDNN's per-shape setup happen here, before /health says ok, not in a client's request.
WARM_UP_TOKENS = (8, 64, 512, 2048)
OPEN_PATHS = ("/health", "/openapi.json", "/docs", "/docs/oauth2-redirect")
RETRY_AFTER_SECONDS = "1"


ERROR_DESCRIPTIONS = {
    400: "invalid request: empty or too many inputs, unknown task, bad dimensions, ...",
    404: "the model named in the request is not served",
    413: "body too large, or (TEI route) too many or too long inputs",
    422: "the body does not match the schema",
    503: "the queue is full (see Retry-After) or the server is shutting down",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]} for status in statuses
    }


@dataclass(frozen=True)
class Route:
    """How a route names its fields in errors, and the status it gives inputs over a size limit."""

    inputs: str
    task: str
    limit_status: int


OPENAI = Route(inputs="input", task="task", limit_status=400)
TEI = Route(inputs="inputs", task="prompt_name", limit_status=413)  # TEI answers 413 to size limits


@dataclass(frozen=True)
class Prepared:
    """A validated request: model inputs (prompt applied), their tokens as embedded, the Matryoshka dim."""

    inputs: list[str]
    tokens: list[int]
    dim: int | None


class EmbeddingService:
    """Validation and batched embedding shared by the OpenAI and TEI routes."""

    def __init__(self, embedder: Embedder, settings: ServeSettings, metrics: Metrics) -> None:
        self.embedder = embedder
        self.settings = settings
        self.batcher = Batcher(
            self._embed,
            settings.max_batch_tokens,
            settings.max_queue,
            metrics.observe_batch,
            warm_up=self.warm_up if settings.warm_up else None,
        )

    def _embed(self, inputs: list[str]) -> np.ndarray:
        """The worker's call: inputs already carry their prompt, so no second prompt is added."""
        return self.embedder.encode(inputs, prompt="", batch_size=len(inputs))

    def warm_up_batches(self) -> list[list[str]]:
        """The warm-up's batches (see WARM_UP_TOKENS): texts of about n tokens, alone and padded."""
        limit = min(self.embedder.tokenizer.max_length, self.settings.max_batch_tokens)
        batches = []
        for tokens in sorted({min(n, limit) for n in WARM_UP_TOKENS}):
            words = max(1, tokens - 2)  # <bos> and <eos> besides; fewer words where a word takes more tokens
            count = self.embedder.count_tokens([" ".join(["warm"] * words)], prompt="")[0]
            if count > tokens:
                words = max(1, words * (tokens - 2) // max(1, count - 2))
            text = " ".join(["warm"] * words)
            batches.append([text])
            if 2 * tokens <= self.settings.max_batch_tokens:
                batches.append([text, "warm"])
        return batches

    def warm_up(self) -> None:
        """One pass per warm-up batch, on the batcher's worker thread, logged with its time."""
        start = time.perf_counter()
        batches = self.warm_up_batches()
        for batch in batches:
            self.embedder.encode(batch, prompt="", batch_size=len(batch))
        logger.info(
            "warm-up: %d passes in %.1f s; /health is ok from now on",
            len(batches),
            time.perf_counter() - start,
        )

    def prepare(
        self, texts: Inputs, task: str | None, dim: int | None, truncate: bool, route: Route
    ) -> Prepared:
        """Check a request against the limits and the model, or raise APIError naming the field."""
        items = [texts] if isinstance(texts, str) else texts
        if not items:
            raise APIError(
                400,
                f"{route.inputs} is empty; send at least one string",
                param=route.inputs,
                code="empty_input",
            )
        if len(items) > self.settings.max_inputs:
            raise APIError(
                route.limit_status,
                f"{route.inputs} has {len(items)} items; this server takes at most {self.settings.max_inputs}",
                param=route.inputs,
                code="too_many_inputs",
            )
        for i, text in enumerate(items):
            if not text:
                raise APIError(
                    400,
                    f"{route.inputs}[{i}] is an empty string",
                    param=f"{route.inputs}[{i}]",
                    code="empty_input",
                )
        try:
            dim = self.embedder.check_dim(dim)
        except InputError as exc:
            raise APIError(400, str(exc), param="dimensions", code="invalid_dimensions") from exc
        try:
            inputs = self.embedder.model_inputs(
                items, task if task is not None else self.settings.default_task
            )
        except InputError as exc:
            raise APIError(400, str(exc), param=route.task, code="unknown_task") from exc
        counts = self.embedder.count_tokens(inputs, prompt="")
        limit = self.embedder.tokenizer.max_length
        if not truncate:
            for i, count in enumerate(counts):
                if count > limit:
                    raise APIError(
                        route.limit_status,
                        f"{route.inputs}[{i}] has {count} tokens (prompt, <bos> and <eos> included) and the "
                        f"model takes at most {limit}; shorten it or send truncate=true",
                        param=f"{route.inputs}[{i}]",
                        code="input_too_long",
                    )
        return Prepared(inputs, [min(count, limit) for count in counts], dim)

    async def embed(self, prepared: Prepared) -> np.ndarray:
        """Vectors [n, dim] of a prepared request, through the batcher; 503 when its queue is full."""
        try:
            future = self.batcher.submit(prepared.inputs, prepared.tokens)
        except Overloaded as exc:
            raise APIError(
                503, str(exc), code="overloaded", headers={"Retry-After": RETRY_AFTER_SECONDS}
            ) from exc
        vectors = await asyncio.wrap_future(future)
        if prepared.dim is None:
            return vectors
        return truncate_and_normalize(torch.from_numpy(vectors), prepared.dim).numpy()


def _openai_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def create_app(embedder: Embedder, settings: ServeSettings) -> FastAPI:
    """The app serving `embedder` under `settings`; the batcher runs from startup to shutdown."""
    if settings.default_task is not None and settings.default_task not in embedder.prompts:
        raise ConfigError(
            f"unknown default task {settings.default_task!r}; known tasks: {', '.join(sorted(embedder.prompts))}"
        )
    created = int(time.time())
    metrics = Metrics()
    service = EmbeddingService(embedder, settings, metrics)
    metrics.queue_depth.set_function(lambda: service.batcher.queued)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "model %s computes in %s (%s) on %s; warming up",
            settings.model_name,
            str(embedder.dtype).removeprefix("torch."),
            embedder.dtype_reason or "as loaded",
            embedder.device,
        )
        service.batcher.start()
        yield
        await asyncio.to_thread(service.batcher.close, settings.shutdown_timeout)

    app = FastAPI(
        title="gemma-embed",
        version=__version__,
        summary="EmbeddingGemma embeddings: OpenAI- and TEI-compatible routes",
        lifespan=lifespan,
        redoc_url=None,
    )
    install_error_handlers(app)

    @app.post(
        "/v1/embeddings",
        response_model=EmbeddingResponse,
        responses=_errors(400, 404, 413, 422, 503),
        summary="OpenAI-compatible embeddings",
    )
    async def openai_embeddings(body: EmbeddingRequest) -> Response:
        if body.model is not None and body.model != settings.model_name:
            raise APIError(
                404,
                f"model {body.model!r} is not served here; this server serves {settings.model_name!r}",
                param="model",
                code="model_not_found",
            )
        prepared = await run_in_threadpool(
            service.prepare, body.input, body.task, body.dimensions, body.truncate, OPENAI
        )
        vectors = await service.embed(prepared)
        data = [
            {"object": "embedding", "index": i, "embedding": _openai_vector(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        tokens = sum(prepared.tokens)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": settings.model_name, "usage": usage})

    @app.post(
        "/embed",
        response_model=list[list[float]],
        responses=_errors(400, 413, 422, 503),
        summary="TEI-compatible embeddings: a bare list of vectors",
    )
    async def tei_embed(body: EmbedRequest) -> Response:
        if not body.normalize:
            raise APIError(
                400,
                "normalize=false is not supported: the model's last layer normalizes, so raw vectors do not exist",
                param="normalize",
                code="unsupported_value",
            )
        prepared = await run_in_threadpool(
            service.prepare, body.inputs, body.prompt_name, body.dimensions, body.truncate, TEI
        )
        return JSONResponse((await service.embed(prepared)).tolist())

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "warming up, or shutting down"}},
        summary="readiness: ok once the warm-up is done",
    )
    async def health() -> Response:
        batcher = service.batcher
        status = ("ok" if batcher.warm else "warming_up") if batcher.running else "unavailable"
        body = {"status": status, "model": settings.model_name, "queued_inputs": batcher.queued}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/v1/models", response_model=ModelList, summary="the served model (OpenAI shape)")
    async def models() -> dict[str, Any]:
        card = {"id": settings.model_name, "object": "model", "created": created, "owned_by": "gemma-embed"}
        return {"object": "list", "data": [card]}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [getattr(route, "path", "") for route in app.routes]
    # The last added is the outermost: CORS, metrics, internal errors, API key, body limit, routes.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, open_paths=OPEN_PATHS)
        _document_api_key(app)
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=routes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _document_api_key(app: FastAPI) -> None:
    """Declare the bearer key and its 401 in the (cached) OpenAPI schema of every protected route."""
    schema = app.openapi()
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = {
        "type": "http",
        "scheme": "bearer",
    }
    refused = {
        "description": "missing or wrong API key",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for path, operations in schema["paths"].items():
        if path in OPEN_PATHS:
            continue
        for operation in operations.values():
            operation["security"] = [{"apiKey": []}]
            operation["responses"]["401"] = refused
