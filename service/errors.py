"""One JSON error shape for the whole API: `{"error": {"code": ..., "message": ...}}`."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"


class APIError(Exception):
    """An error the client can act on: HTTP status, a stable machine-readable code and a message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict:
    """Build the JSON body shared by every error response."""
    return {"error": {"code": code, "message": message}}


ERROR_RESPONSES = {
    status: {
        "description": description,
        "content": {"application/json": {"example": error_body(code, message)}},
    }
    for status, code, description, message in [
        (
            400,
            "invalid_image",
            "Invalid input",
            "image 0 is not a decodable image: cannot identify image file",
        ),
        (
            401,
            "unauthorized",
            "Missing or wrong API key",
            "missing API key; send 'Authorization: Bearer <key>'",
        ),
        (404, "tenant_not_found", "Unknown tenant", "tenant 'acme' has no active adapter"),
        (413, "payload_too_large", "Body or image over a limit", "request body exceeds 20971520 bytes"),
        (429, "overloaded", "Queue full", "the inference queue is full; retry after a short delay"),
        (504, "timeout", "Request timed out", "the request did not finish within 30.0 s"),
    ]
}


def request_id(request: Request) -> str:
    """Return the id that the request-id middleware attached to this request."""
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


def _response(
    request: Request, status: int, code: str, message: str, headers: dict | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    headers[REQUEST_ID_HEADER] = request_id(request)
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map API errors, HTTP errors, validation errors and unexpected exceptions to the one JSON shape."""

    @app.exception_handler(APIError)
    async def handle_api_error(request: Request, error: APIError) -> JSONResponse:
        return _response(request, error.status, error.code, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return _response(request, error.status_code, code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors()[:5]:
            location = ".".join(str(part) for part in item.get("loc", ()))
            problems.append(f"{location}: {item.get('msg')}")
        return _response(request, 422, "invalid_request", "; ".join(problems) or "invalid request")

    @app.exception_handler(Exception)
    async def handle_unexpected(request: Request, error: Exception) -> JSONResponse:
        rid = request_id(request)
        logger.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, rid)
        return _response(
            request, 500, "internal_error", f"internal error; quote request id {rid} when reporting it"
        )
