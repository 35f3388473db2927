"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """Report that the process is up and serving HTTP; it says nothing about the model."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Report readiness: the backbone is loaded and the inference worker is running.

    Returns 503 with the same fields while either is not the case. Example response:
    `{"ready": true, "backbone": "ViT-B-16", "backend": "torch", "provider": "cpu (torch.float32, 8 threads)",
    "tenants": 2, "worker_alive": true, "queue_depth": 0, "overlay_cache_bytes": 9437184}`
    """
    service = request.app.state.service
    if service is None:
        return JSONResponse({"ready": False, "reason": "starting or stopping"}, status_code=503)
    alive = service.worker.alive
    body = {
        "ready": alive,
        "backbone": service.backbone.arch,
        "backbone_sha256": service.backbone.sha256,
        "backend": service.backend.name,
        "provider": service.backend.provider,
        "tenants": len(service.registry.tenants()),
        "worker_alive": alive,
        "queue_depth": service.worker.queue_depth,
        "overlay_cache_bytes": service.cache.nbytes,
    }
    return JSONResponse(body, status_code=200 if alive else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Expose Prometheus metrics: requests, latency, batch sizes, queue depth, cache and swaps."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
