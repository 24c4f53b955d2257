"""Every error response is JSON in the OpenAI shape `{"error": {"message", "type", "param", "code"}}`.

That holds for the server's own checks (APIError), schema validation (422, or 400 for a body that is not
JSON), unknown routes and methods (404, 405) and unexpected failures (500: the traceback goes to the server
log, never to the client).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("gemma_embed.serve")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(HTTPException):
    """A request the server refuses: status, message, and the OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.param = param
        self.code = code


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """`{"error": {...}}`; the type is `server_error` for 5xx, `invalid_request_error` otherwise."""
    kind = SERVER_ERROR if status >= 500 else INVALID_REQUEST
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in the OpenAI shape, ready to send."""
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def _default_code(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, APIError):
        return error_response(exc.status_code, exc.detail, exc.param, exc.code, exc.headers)
    message = {
        404: f"no route {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    text = message.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, text, None, _default_code(exc.status_code), exc.headers)


def _location(loc: tuple[Any, ...]) -> str:
    """`("body", "input", 2)` -> `input[2]`."""
    parts = loc[1:] if loc and loc[0] == "body" else loc
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0]
    if first["type"] == "json_invalid":
        return error_response(400, "the request body is not valid JSON", None, "invalid_json")
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:  # FastAPI leaves such a body unparsed: say why, not what it lacks
        message = (
            f"send the body as JSON with 'Content-Type: application/json' (got {content_type or 'none'!r})"
        )
        return error_response(422, message, None, "invalid_content_type")
    param = _location(tuple(first["loc"])) or None
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    message = f"{param}: {first['msg']}{more}" if param else f"{first['msg']}{more}"
    return error_response(422, message, param, "invalid_value")


class InternalErrorMiddleware:
    """An unexpected exception becomes a logged traceback and a 500 JSON error without details.

    Handled here rather than re-raised to the server (Starlette's default), so the connection stays usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_and_track(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_track)
        except Exception:
            if started or scope["type"] != "http":
                raise
            logger.exception("internal error on %s %s", scope["method"], scope["path"])
            response = error_response(
                500, "internal server error; the server log has the details", None, "internal_error"
            )
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Render HTTP and validation errors in the OpenAI shape (InternalErrorMiddleware does the rest)."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
