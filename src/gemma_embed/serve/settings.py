"""Server settings: one frozen record shared by the app, the batcher and the command line."""

from __future__ import annotations

from dataclasses import dataclass

from gemma_embed.errors import ConfigError

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeSettings:
    """What a server accepts and how it batches; the defaults are the CLI's.

    max_batch_tokens: budget of one forward pass in padded tokens (inputs x longest input); a single input
        longer than the budget still runs alone, so 1 disables batching.
    max_inputs: inputs per request. max_queue: inputs waiting for the model before new requests get 503.
    max_body_bytes: request body limit (413 above it). default_task: prompt name used when a request names
        none (None: no prompt, as `Embedder.encode` and sentence-transformers do).
    api_key: when set, every route but /health, /openapi.json and /docs needs `Authorization: Bearer KEY`.
    cors_origins: origins allowed by CORS (none: CORS off).
    warm_up: run one pass per length bucket before /health says ok (see `gemma_embed.serve.app`).
    """

    model_name: str
    host: str = LOOPBACK
    port: int = 8000
    api_key: str | None = None
    max_batch_tokens: int = 16384
    max_inputs: int = 256
    max_queue: int = 1024
    max_body_bytes: int = 8 * 1024 * 1024
    default_task: str | None = None
    cors_origins: tuple[str, ...] = ()
    shutdown_timeout: float = 30.0
    access_log: bool = True
    warm_up: bool = True

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_inputs", "max_queue", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_queue < self.max_inputs:
            raise ConfigError(
                f"max_queue ({self.max_queue}) must be at least max_inputs ({self.max_inputs}), "
                "or a full-size request could never be queued"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is not in 0..65535")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key is empty; pass a non-empty key or none")
        if self.shutdown_timeout < 0:
            raise ConfigError(f"shutdown_timeout must be >= 0 seconds, got {self.shutdown_timeout}")
