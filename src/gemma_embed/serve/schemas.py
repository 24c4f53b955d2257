"""Request and response bodies of the OpenAI and TEI routes, as they appear in /openapi.json."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "an array"}


def _json_type(value: Any) -> str:
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


def _check_inputs(value: Any) -> Any:
    """One clear error naming the offending item, instead of one per member of the union."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise PydanticCustomError(
                    "inputs", "item {index} is {kind}, not a string", {"index": i, "kind": _json_type(item)}
                )
    elif not isinstance(value, str):
        raise PydanticCustomError(
            "inputs", "expected a string or a list of strings, got {kind}", {"kind": _json_type(value)}
        )
    return value


Inputs = Annotated[str | list[str], BeforeValidator(_check_inputs)]


class EmbeddingRequest(BaseModel):
    """OpenAI `POST /v1/embeddings`; unknown fields are refused, as OpenAI refuses them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: Inputs = Field(description="a string or a list of strings (token arrays are not accepted)")
    model: str | None = Field(None, description="must name the served model (GET /v1/models) when given")
    dimensions: int | None = Field(
        None, description="Matryoshka truncation to the first N dims, re-normalized"
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: the little-endian float32 bytes of each vector"
    )
    user: str | None = Field(None, description="accepted for compatibility and ignored")
    task: str | None = Field(
        None,
        description="extension: EmbeddingGemma prompt name (query, document, STS, ...); "
        "default: the server's --default-task, else no prompt",
    )
    truncate: bool = Field(
        False, description="extension: cut inputs longer than the model's limit instead of refusing them"
    )


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class EmbedRequest(BaseModel):
    """TEI `POST /embed`; unknown fields are ignored, as TEI ignores them."""

    model_config = ConfigDict(strict=True)

    inputs: Inputs
    normalize: bool = Field(
        True, description="only true: the model ends in a Normalize layer, unnormalized vectors do not exist"
    )
    truncate: bool = Field(False, description="cut inputs longer than the model's limit instead of a 413")
    prompt_name: str | None = Field(
        None, description="prompt name (query, document, STS, ...); default: the server's --default-task"
    )
    dimensions: int | None = Field(
        None, description="Matryoshka truncation to the first N dims, re-normalized"
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "warming_up", "unavailable"]
    model: str
    queued_inputs: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
