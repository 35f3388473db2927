"""Everything the lifespan builds and the routes share, in one object on `app.state.service`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from .backbone import Backbone
from .backends import Backend
from .cache import VariantCache
from .gallery import GalleryStore
from .metrics import Metrics
from .registry import TenantRegistry
from .settings import Settings
from .store import AdapterStore
from .worker import InferenceWorker

logger = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """The loaded backbone, engine, worker, registry and galleries of one running app."""

    settings: Settings
    metrics: Metrics
    backbone: Backbone
    backend: Backend
    worker: InferenceWorker
    cache: VariantCache
    store: AdapterStore
    registry: TenantRegistry
    galleries: GalleryStore
    background: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> ServiceState:
        """Load the backbone, start the worker and activate every tenant the store points to."""
        backbone = await asyncio.to_thread(Backbone.load, settings)
        backend = make_backend(settings, backbone)
        logger.info("backend %s, provider %s", backend.name, backend.provider)
        worker = InferenceWorker(
            backend,
            metrics,
            settings.max_batch_size,
            settings.max_wait_ms,
            settings.queue_size,
            settings.request_timeout_s,
        )
        worker.start()
        cache = VariantCache(settings.overlay_cache_bytes, metrics)
        store = AdapterStore(settings.adapter_store)
        registry = TenantRegistry(store, backbone, backend, worker, cache, metrics)
        state = cls(settings, metrics, backbone, backend, worker, cache, store, registry, GalleryStore(store))
        await registry.load_all()
        if settings.watch_interval_s > 0:
            state.background.append(
                asyncio.create_task(registry.watch(settings.watch_interval_s), name="watcher")
            )
        logger.info("serving %d tenants from %s", len(registry.tenants()), store.root)
        return state

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.worker.stop()


def make_backend(settings: Settings, backbone: Backbone) -> Backend:
    """Create the configured engine."""
    if settings.backend == "onnxruntime":
        try:
            from .backends.onnx_backend import OnnxBackend
        except ImportError as error:
            raise ValueError(
                f"RADAPTER_BACKEND=onnxruntime needs the onnxruntime package ({error}); install "
                "radapter[cpu] or radapter[gpu], or set RADAPTER_BACKEND=torch."
            ) from error
        return OnnxBackend(backbone, settings)
    from .backends.torch_backend import TorchBackend

    return TorchBackend(backbone)
