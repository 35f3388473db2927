"""The FastAPI application: lifespan, middleware, error handlers and routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .api.routes import admin, classify, embed, gallery, health, retrieve, segment
from .api.schemas import ClassifyRequest, EmbedRequest, RetrieveRequest, SegmentRequest
from .demo import prepare_demo
from .errors import install_error_handlers
from .metrics import Metrics
from .middleware import BodyLimitMiddleware, install_request_middleware
from .settings import Settings
from .state import ServiceState

logger = logging.getLogger(__name__)

# Bodies documented by hand (JSON or multipart), whose schemas FastAPI would not collect itself.
DOCUMENTED_BODIES = (ClassifyRequest, EmbedRequest, RetrieveRequest, SegmentRequest)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the backbone loads in the lifespan, so building is cheap and never fails late.

    In demo mode, building also copies missing demo tenants into the store and fills in their keys,
    so an invalid demo-tenant folder or keys file fails here, before the backbone loads.
    """
    settings = settings or Settings()
    demo = prepare_demo(settings)
    if demo is not None:
        settings = demo.settings
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await ServiceState.start(settings, metrics)
        app.state.service = service
        logger.info("ready: backend %s (%s)", service.backend.name, service.backend.provider)
        try:
            yield
        finally:
            app.state.service = None
            await service.stop()
            logger.info("stopped")

    app = FastAPI(
        title="R-Adapter inference service",
        version="0.1.0",
        description="Many tenants' R-Adapter fine-tunes of one shared open_clip backbone, with hot-swap.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.demo = demo
    app.state.metrics = metrics
    app.state.service = None
    install_error_handlers(app)
    install_request_middleware(app, metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    for module in (health, classify, embed, retrieve, segment, gallery, admin):
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in DOCUMENTED_BODIES:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema
