"""Prometheus metrics, one registry per app so several apps (tests) never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's counters, gauges and histograms, labelled by tenant and route where that applies."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "radapter_requests_total",
            "HTTP requests by route template, tenant and status code",
            ["route", "tenant", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "radapter_request_latency_seconds",
            "HTTP request latency by route template and tenant",
            ["route", "tenant"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "radapter_batch_size",
            "rows per encoder call by encoder kind and tenant",
            ["kind", "tenant"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_latency = Histogram(
            "radapter_batch_latency_seconds",
            "encoder call time by encoder kind",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "radapter_queue_depth", "encoder calls waiting for the worker", registry=registry
        )
        self.rejected = Counter(
            "radapter_rejected_total", "encoder calls rejected because the queue was full", registry=registry
        )
        self.cache_hits = Counter(
            "radapter_overlay_cache_hits_total", "overlay cache hits", ["tenant"], registry=registry
        )
        self.cache_misses = Counter(
            "radapter_overlay_cache_misses_total",
            "overlay cache misses (overlay merged on demand)",
            ["tenant"],
            registry=registry,
        )
        self.cache_evictions = Counter(
            "radapter_overlay_cache_evictions_total",
            "overlays evicted to stay under the byte bound",
            ["tenant"],
            registry=registry,
        )
        self.cache_bytes = Gauge(
            "radapter_overlay_cache_bytes", "bytes held by cached overlays", registry=registry
        )
        self.swap_duration = Histogram(
            "radapter_swap_duration_seconds",
            "time to load, validate, merge and activate an adapter version",
            ["tenant"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.swaps = Counter(
            "radapter_swaps_total",
            "adapter activations by outcome (ok, rejected)",
            ["tenant", "outcome"],
            registry=registry,
        )
