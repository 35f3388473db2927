"""ASGI middleware: request ids, the body-size limit and per-route metrics."""

from __future__ import annotations

import re
import sys
import time
import uuid

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import REQUEST_ID_HEADER

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # anyio depends on this backport on Python 3.10
    from exceptiongroup import BaseExceptionGroup
from .metrics import Metrics

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class BodyLimitMiddleware:
    """Reject bodies over `max_bytes`: at once from Content-Length, or while streaming when it is absent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, self._message(int(declared)))
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(received)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception as error:
            # The error is raised inside the app's receive() call. BaseHTTPMiddleware runs the app in
            # an anyio task group, which wraps it in an ExceptionGroup, so look inside groups too.
            too_large = _find_body_too_large(error)
            if too_large is None or response_started:
                raise
            await _send_json(send, 413, self._message(too_large.received))

    def _message(self, size: int) -> str:
        return (
            f"request body of {size} bytes exceeds the limit of {self.max_bytes} (RADAPTER_MAX_BODY_BYTES)."
        )


class BodyTooLargeError(Exception):
    """Raised from `receive()` when a streamed body passes the limit; turned into a 413 by the middleware."""

    def __init__(self, received: int) -> None:
        super().__init__(f"request body passed the limit after {received} bytes")
        self.received = received


def _find_body_too_large(error: BaseException) -> BodyTooLargeError | None:
    if isinstance(error, BodyTooLargeError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _find_body_too_large(inner)
            if found is not None:
                return found
    return None


async def _send_json(send: Send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": {"code": "payload_too_large", "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_request_middleware(app: FastAPI, metrics: Metrics) -> None:
    """Attach a request id to every request and response, and record request counts and latency."""

    @app.middleware("http")
    async def request_context(request: Request, call_next):
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request.state.request_id = incoming if REQUEST_ID_PATTERN.fullmatch(incoming) else uuid.uuid4().hex
        started = time.perf_counter()
        response = await call_next(request)
        response.headers[REQUEST_ID_HEADER] = request.state.request_id
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        tenant = _tenant_label(request)
        metrics.requests.labels(route=template, tenant=tenant, status=str(response.status_code)).inc()
        metrics.latency.labels(route=template, tenant=tenant).observe(time.perf_counter() - started)
        return response


def _tenant_label(request: Request) -> str:
    # Label only tenants that are served, so unauthenticated callers cannot grow the label set.
    tenant = getattr(request.state, "tenant", None)
    service = getattr(request.app.state, "service", None)
    if tenant is None or service is None or tenant not in service.registry.tenants():
        return "-"
    return tenant
