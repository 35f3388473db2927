"""Merged tenant variants and the byte-bounded LRU cache that holds them."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .metrics import Metrics

logger = logging.getLogger(__name__)

VariantKey = tuple[str, str, float]  # (tenant, version, alpha)


@dataclass(eq=False)
class Variant:
    """One tenant version merged at one alpha: the engine handle and the classification head.

    Requests hold a reference for their whole life, so a variant evicted or replaced by a swap stays
    valid for them and its memory is freed when the last of them finishes.
    """

    tenant: str
    version: str
    alpha: float
    handle: object
    handle_nbytes: int
    labels: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    head: torch.Tensor | None = None  # (num_labels, D) L2-normalised label embeddings

    @property
    def key(self) -> VariantKey:
        return (self.tenant, self.version, self.alpha)

    @property
    def nbytes(self) -> int:
        head = 0 if self.head is None else self.head.numel() * self.head.element_size()
        return self.handle_nbytes + head


class VariantCache:
    """LRU of variants bounded by their total bytes; thread-safe because variants are built off-loop."""

    def __init__(self, max_bytes: int, metrics: Metrics) -> None:
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._entries: OrderedDict[VariantKey, Variant] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: VariantKey) -> Variant | None:
        """Return the cached variant and mark it recently used, or None."""
        with self._lock:
            variant = self._entries.get(key)
            if variant is not None:
                self._entries.move_to_end(key)
        counter = self.metrics.cache_hits if variant is not None else self.metrics.cache_misses
        counter.labels(tenant=key[0]).inc()
        return variant

    def put(self, variant: Variant) -> None:
        """Insert a variant, evicting least recently used ones until the total fits the bound."""
        with self._lock:
            old = self._entries.pop(variant.key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[variant.key] = variant
            self._bytes += variant.nbytes
            # The newest entry stays even when it alone exceeds the bound: requests need it now.
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                key, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.metrics.cache_evictions.labels(tenant=key[0]).inc()
                logger.info(
                    "evicted overlay %s/%s alpha=%s (%d bytes)", key[0], key[1], key[2], evicted.nbytes
                )
            self.metrics.cache_bytes.set(self._bytes)

    def keys(self, tenant: str) -> list[VariantKey]:
        """List the cached keys of `tenant`, least recently used first."""
        with self._lock:
            return [key for key in self._entries if key[0] == tenant]

    def trim(self, tenant: str, version: str, max_variants: int, keep_alpha: float) -> list[Variant]:
        """Evict the tenant version's least recently used variants other than `keep_alpha` until at
        most `max_variants` of them remain; return the evicted variants."""
        evicted = []
        with self._lock:
            keys = [key for key in self._entries if key[:2] == (tenant, version) and key[2] != keep_alpha]
            for key in keys[: max(0, len(keys) - max_variants)]:
                variant = self._entries.pop(key)
                self._bytes -= variant.nbytes
                evicted.append(variant)
                self.metrics.cache_evictions.labels(tenant=tenant).inc()
            self.metrics.cache_bytes.set(self._bytes)
        for variant in evicted:
            logger.info(
                "evicted overlay %s/%s alpha=%s: over %d request-alpha variants per tenant",
                tenant,
                version,
                variant.alpha,
                max_variants,
            )
        return evicted

    def drop(self, tenant: str, keep_version: str | None = None) -> int:
        """Remove every variant of `tenant` except those of `keep_version`; return how many went."""
        with self._lock:
            keys = [key for key in self._entries if key[0] == tenant and key[1] != keep_version]
            for key in keys:
                self._bytes -= self._entries.pop(key).nbytes
            self.metrics.cache_bytes.set(self._bytes)
        return len(keys)
