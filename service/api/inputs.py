"""Parse one request body, JSON (base64 images) or multipart (image files), into a pydantic model."""

from __future__ import annotations

import json
import types
import typing
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from ..errors import APIError
from ..settings import Settings

Model = TypeVar("Model", bound=BaseModel)


def openapi_body(model: type[BaseModel], files: dict[str, str]) -> dict[str, Any]:
    """Build `openapi_extra` documenting both body encodings; `files` maps a field to its description."""
    properties: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name in files:
            item = {"type": "string", "format": "binary"}
            properties[name] = {"type": "array", "items": item} if _is_list(field.annotation) else item
            properties[name]["description"] = files[name]
        else:
            properties[name] = {"type": "string", "description": field.description or name}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": properties}},
            },
        }
    }


async def parse_body(request: Request, model: type[Model], settings: Settings) -> Model:
    """Read the body as `model`; multipart fields of list type may repeat, e.g. `-F labels=cat -F labels=dog`.

    JSON bodies are validated in pydantic's strict mode, so a value of the wrong JSON type is a 422.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        data = await _multipart_fields(request, model, settings)
    elif content_type.startswith("application/json"):
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise APIError(400, "invalid_json", f"the body is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise APIError(400, "invalid_json", "the body must be a JSON object.")
    else:
        raise APIError(
            415,
            "unsupported_media_type",
            f"content type {content_type[:80]!r} is not supported; send application/json or multipart/form-data.",
        )
    # JSON has typed values, so validate strictly: "0.5" or true is not an alpha. Multipart fields
    # arrive as strings and must be parsed, so they keep pydantic's lax mode.
    strict = not content_type.startswith("multipart/form-data")
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as error:
        raise APIError(422, "invalid_request", _describe(error)) from error


async def _multipart_fields(request: Request, model: type[BaseModel], settings: Settings) -> dict[str, Any]:
    form = await request.form(max_files=settings.max_images + 1, max_fields=settings.max_texts + 16)
    data: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        values = form.getlist(name)
        if not values:
            continue
        parsed = [await _form_value(value) for value in values]
        data[name] = parsed if _is_list(field.annotation) else parsed[0]
    unknown = sorted(set(form.keys()) - set(model.model_fields))
    if unknown:
        raise APIError(
            422, "invalid_request", f"unknown form fields {unknown}; known: {sorted(model.model_fields)}."
        )
    return data


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_list(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(argument) for argument in typing.get_args(annotation))
    return origin is list


async def _form_value(value: str | UploadFile) -> Any:
    if isinstance(value, UploadFile):
        return await value.read()
    return value


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        location = ".".join(str(part) for part in item.get("loc", ())) or "body"
        problems.append(f"{location}: {item.get('msg')}")
    return "; ".join(problems)
