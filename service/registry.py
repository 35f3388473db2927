"""Tenant registry: validated adapter versions, atomic hot-swap, and merged variants per alpha."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from training.models import weights_sha256
from training.radapter import AdapterMetadata, check_base_matches, load_adapter, merge_overlay
from training.radapter.checkpoint import METADATA_NAME, WEIGHTS_NAME

from .backbone import Backbone
from .backends import Backend, VariantSpec
from .cache import Variant, VariantCache, VariantKey
from .errors import APIError
from .metrics import Metrics
from .store import AdapterStore
from .worker import InferenceWorker

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ["a photo of a {}."]
# A request alpha is rounded to this many decimals (steps of 0.01) before it keys a variant, so that
# near-equal floats share one merge, one cache entry and one ONNX export directory.
ALPHA_DECIMALS = 2
# Maximum number of variants at request alphas (the version's default alpha not counted) that one
# tenant keeps cached, or prepares at once, so that one tenant cannot fill the cache or the disk.
# NOTE: a module constant until it becomes a setting.
MAX_REQUEST_ALPHA_VARIANTS = 4


def quantize_alpha(alpha: float) -> float:
    """Round a request alpha to the 0.01 grid; -0.0 becomes 0.0."""
    return round(float(alpha), ALPHA_DECIMALS) + 0.0


@dataclass(eq=False)
class TenantAdapter:
    """One loaded, validated adapter version of a tenant."""

    tenant: str
    version: str
    metadata: AdapterMetadata
    tensors: dict[str, torch.Tensor]
    activated_at: float
    sha256: str  # of the adapter tensors, see `weights_sha256`

    @property
    def default_alpha(self) -> float:
        return float(self.metadata.config.alpha)

    @property
    def templates(self) -> list[str]:
        return list(self.metadata.templates) or DEFAULT_TEMPLATES


def prompts(labels: list[str], templates: list[str]) -> list[str]:
    """Expand every label with every template, label-major: `[l0 t0, l0 t1, ..., l1 t0, ...]`."""
    return [t.replace("{}", label) if "{}" in t else f"{t} {label}" for label in labels for t in templates]


class TenantRegistry:
    """Maps tenant ids to their active adapter and builds merged variants for the worker.

    A swap prepares the new version completely (load, validate, merge, classification head) before a
    single dict assignment makes it visible, so requests see the old or the new version, never a mix.
    """

    def __init__(
        self,
        store: AdapterStore,
        backbone: Backbone,
        backend: Backend,
        worker: InferenceWorker,
        cache: VariantCache,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.backbone = backbone
        self.backend = backend
        self.worker = worker
        self.cache = cache
        self.metrics = metrics
        self._base = backbone.mergeable_tensors()
        self._active: dict[str, TenantAdapter] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._building: dict[VariantKey, asyncio.Future] = {}

    def tenants(self) -> dict[str, TenantAdapter]:
        """Return a snapshot of the active adapters by tenant id."""
        return dict(self._active)

    def get(self, tenant: str) -> TenantAdapter:
        """Return the tenant's active adapter or raise 404."""
        adapter = self._active.get(tenant)
        if adapter is None:
            raise APIError(
                404, "tenant_not_found", f"tenant {tenant!r} has no active adapter; an admin must PUT one."
            )
        return adapter

    async def load_all(self) -> None:
        """Activate every tenant whose ACTIVE file names a valid version; log and skip the others."""
        for tenant in self.store.tenants():
            try:
                version = self.store.read_active(tenant)
                if version is not None:
                    await self.activate(tenant, version, write_pointer=False)
            except APIError as error:
                logger.error("tenant %s not served: %s", tenant, error.message)

    def load_directory(
        self, tenant: str, version: str, directory: Path, part_names: dict[str, str] | None = None
    ) -> TenantAdapter:
        """Read and validate an adapter directory against the backbone (blocking, run off the event loop).

        `part_names` maps adapter file names to the upload parts they came from, so that errors about
        an upload name the part the client sent instead of the staging file.
        """
        try:
            tensors, metadata = load_adapter(directory)
        except FileNotFoundError as error:
            message = _without_paths(error, directory, part_names)
            raise APIError(
                404, "version_not_found", f"tenant {tenant!r} version {version!r}: {message}"
            ) from error
        except ValueError as error:
            message = _without_paths(error, directory, part_names)
            raise APIError(
                400, "invalid_adapter", f"tenant {tenant!r} version {version!r}: {message}"
            ) from error
        try:
            check_base_matches(metadata, self.backbone.arch, self.backbone.sha256)
        except ValueError as error:
            raise APIError(409, "base_mismatch", f"tenant {tenant!r} version {version!r}: {error}") from error
        return TenantAdapter(tenant, version, metadata, tensors, time.time(), weights_sha256(tensors))

    async def activate(
        self, tenant: str, version: str, *, write_pointer: bool = True, preloaded: TenantAdapter | None = None
    ) -> TenantAdapter:
        """Load, validate and merge `version`, then make it the tenant's active version atomically.

        Any failure raises before the active version, the ACTIVE file or the cache change.
        """
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            return await self._activate_locked(
                tenant, version, write_pointer=write_pointer, preloaded=preloaded
            )

    async def _activate_locked(
        self, tenant: str, version: str, *, write_pointer: bool, preloaded: TenantAdapter | None
    ) -> TenantAdapter:
        """Do the work of `activate`; the caller holds the tenant's lock."""
        started = time.perf_counter()
        try:
            adapter = preloaded or await asyncio.to_thread(
                self.load_directory, tenant, version, self.store.version_dir(tenant, version)
            )
            variant = await self._build_variant(adapter, adapter.default_alpha)
        except APIError as error:
            self.metrics.swaps.labels(tenant=tenant, outcome="rejected").inc()
            logger.warning("rejected %s version %s: %s", tenant, version, error.message)
            raise
        if write_pointer:
            await asyncio.to_thread(self.store.write_active, tenant, version)
        previous = self._active.get(tenant)
        self._active[tenant] = adapter
        self.cache.put(variant)
        self.cache.drop(tenant, keep_version=version)
        elapsed = time.perf_counter() - started
        self.metrics.swap_duration.labels(tenant=tenant).observe(elapsed)
        self.metrics.swaps.labels(tenant=tenant, outcome="ok").inc()
        logger.info(
            "activated %s version %s (was %s) in %.1f ms",
            tenant,
            version,
            previous.version if previous else None,
            elapsed * 1000,
        )
        return adapter

    async def deactivate(self, tenant: str) -> None:
        """Stop serving a tenant; requests already holding its variant finish normally."""
        async with self._locks.setdefault(tenant, asyncio.Lock()):
            await asyncio.to_thread(self.store.clear_active, tenant)
            previous = self._active.pop(tenant, None)
            self.cache.drop(tenant)
            logger.info("deactivated %s (was %s)", tenant, previous.version if previous else None)

    async def variant(self, tenant: str, alpha: float | None = None) -> Variant:
        """Return the merged variant a request should use for its whole life.

        The active adapter and the cache are read without an `await` in between, so the variant always
        belongs to the version that was active when the request asked.
        """
        adapter = self.get(tenant)
        alpha = adapter.default_alpha if alpha is None else quantize_alpha(alpha)
        key = (tenant, adapter.version, alpha)
        variant = self.cache.get(key)
        if variant is not None:
            return variant
        pending = self._building.get(key)
        if pending is None:
            if alpha != adapter.default_alpha:
                self._check_request_alpha_builds(adapter)
            pending = asyncio.ensure_future(self._build_variant(adapter, alpha))
            self._building[key] = pending
            pending.add_done_callback(lambda _: self._building.pop(key, None))
        variant = await asyncio.shield(pending)
        if self._active.get(tenant) is adapter:  # never cache a version that was swapped out meanwhile
            self.cache.put(variant)
            evicted = self.cache.trim(
                tenant, adapter.version, MAX_REQUEST_ALPHA_VARIANTS, keep_alpha=adapter.default_alpha
            )
            for old in evicted:
                await asyncio.to_thread(self.backend.discard, old.handle)
        return variant

    def _check_request_alpha_builds(self, adapter: TenantAdapter) -> None:
        """Raise 429 when the tenant already prepares the maximum number of request-alpha variants."""
        building = [
            key[2]
            for key in self._building
            if key[:2] == (adapter.tenant, adapter.version) and key[2] != adapter.default_alpha
        ]
        if len(building) >= MAX_REQUEST_ALPHA_VARIANTS:
            raise APIError(
                429,
                "too_many_alpha_variants",
                f"tenant {adapter.tenant!r} is already preparing variants at alphas {sorted(building)}, "
                f"the maximum of {MAX_REQUEST_ALPHA_VARIANTS}; retry shortly or use one of those alphas.",
                headers={"Retry-After": "1"},
            )

    async def _build_variant(self, adapter: TenantAdapter, alpha: float) -> Variant:
        overlay = await asyncio.to_thread(self._merge, adapter, alpha)
        spec = VariantSpec(adapter.tenant, adapter.version, alpha, adapter.sha256)
        try:
            if self.backend.prepare_on_engine_thread:
                handle = await self.worker.run_in_thread(self.backend.prepare, spec, overlay)
            else:
                handle = await asyncio.to_thread(self.backend.prepare, spec, overlay)
        except Exception as error:  # an engine failure (export, session, device memory), not bad input
            logger.exception("the %s engine could not prepare %s", self.backend.name, spec)
            raise APIError(
                500,
                "variant_prepare_failed",
                f"the {self.backend.name} engine could not prepare tenant {adapter.tenant!r} version "
                f"{adapter.version!r} at alpha={alpha}; the server log has the cause.",
            ) from error
        variant = Variant(adapter.tenant, adapter.version, alpha, handle, self.backend.handle_nbytes(handle))
        variant.templates = adapter.templates
        if adapter.metadata.labels:
            variant.labels = list(adapter.metadata.labels)
            variant.head = await self.worker.run_in_thread(
                self.encode_labels_now, variant, variant.labels, adapter.templates
            )
        return variant

    def _merge(self, adapter: TenantAdapter, alpha: float) -> dict[str, torch.Tensor]:
        try:
            return merge_overlay(self._base, adapter.tensors, alpha)
        except (ValueError, RuntimeError) as error:
            # RuntimeError: a matrix product with mismatched widths, i.e. the adapter is for other towers.
            raise APIError(
                400,
                "invalid_adapter",
                f"tenant {adapter.tenant!r} version {adapter.version!r} does not fit {self.backbone.arch}: {error}",
            ) from error

    def encode_labels_now(self, variant: Variant, labels: list[str], templates: list[str]) -> torch.Tensor:
        """Build a zero-shot head on the engine thread: mean template embedding per label, re-normalised."""
        ids = self.backbone.tokenize(prompts(labels, templates)).ids
        chunks = [self.backend.encode_text(variant.handle, chunk) for chunk in torch.split(ids, 256)]
        return head_from_prompt_embeddings(torch.cat(chunks), len(labels))

    async def encode_labels(self, variant: Variant, labels: list[str]) -> torch.Tensor:
        """Build a head for request-supplied labels through the batching worker."""
        ids = self.backbone.tokenize(prompts(labels, variant.templates)).ids
        embeddings = await self.worker.submit("text", variant, ids)
        return head_from_prompt_embeddings(embeddings, len(labels))

    async def watch(self, interval_s: float) -> None:
        """Follow ACTIVE files changed by other replicas: activate new pointers, drop removed ones.

        A failed pass (an unreadable store, a backend error) is logged once per failure streak and
        retried on the next interval, so a transient storage fault never stops the watcher.
        """
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync_with_store()
            except Exception:  # the watcher must outlive any single failed pass
                if not failing:
                    logger.exception("store sync failed; retrying every %.1f s", interval_s)
                failing = True
                continue
            if failing:
                logger.info("store sync recovered")
            failing = False

    async def sync_with_store(self) -> None:
        """Converge the served versions to the store's ACTIVE files once.

        Each tenant's ACTIVE file is read under that tenant's lock, so an admin call that is
        activating a version on this replica finishes first and is never undone by a stale read.
        """
        for tenant in sorted(set(self.store.tenants()) | set(self._active)):
            async with self._locks.setdefault(tenant, asyncio.Lock()):
                await self._sync_tenant_locked(tenant)

    async def _sync_tenant_locked(self, tenant: str) -> None:
        try:
            version = await asyncio.to_thread(self.store.read_active, tenant)
        except APIError as error:
            logger.error("tenant %s has an invalid ACTIVE file: %s", tenant, error.message)
            return
        current = self._active.get(tenant)
        if version is None:
            if current is not None:
                self._active.pop(tenant, None)
                self.cache.drop(tenant)
                logger.info("watcher stopped serving %s (was %s): ACTIVE removed", tenant, current.version)
            return
        if current is not None and current.version == version:
            return
        try:
            await self._activate_locked(tenant, version, write_pointer=False, preloaded=None)
        except APIError as error:
            logger.error("watcher could not activate %s version %s: %s", tenant, version, error.message)


def _without_paths(error: Exception, directory: Path, part_names: dict[str, str] | None) -> str:
    # load_adapter names files by their full path, which would show clients the server's layout.
    message = str(error)
    for name in (WEIGHTS_NAME, METADATA_NAME):
        label = f"the uploaded {part_names[name]!r} part" if part_names and name in part_names else name
        message = message.replace(str(directory / name), label)
    return message.replace(str(directory), "the adapter directory")


def head_from_prompt_embeddings(embeddings: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Average `(num_labels * T, D)` prompt embeddings per label and re-normalise: `(num_labels, D)`."""
    per_label = embeddings.reshape(num_labels, -1, embeddings.shape[-1]).mean(dim=1)
    return torch.nn.functional.normalize(per_label, dim=-1)
