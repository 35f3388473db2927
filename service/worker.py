"""The inference worker: one per device, batching encoder calls that share a tenant variant."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from .backends import Backend
from .cache import Variant
from .errors import APIError
from .metrics import Metrics

logger = logging.getLogger(__name__)

KINDS = ("image", "text", "dense")


@dataclass(eq=False)
class Job:
    """One encoder call from one request, waiting for a batch."""

    kind: str
    variant: Variant
    inputs: torch.Tensor
    future: asyncio.Future


class InferenceWorker:
    """Queue encoder calls, group them by (kind, tenant, version, alpha) and run each group as one batch.

    The engine runs on a single dedicated thread, so `functional_call`'s temporary parameter swap is
    never observed by another call. Calls from classify, embed and retrieve share a batch when they
    need the same encoder of the same variant, because the outputs do not depend on the route.
    """

    def __init__(
        self,
        backend: Backend,
        metrics: Metrics,
        max_batch_size: int,
        max_wait_ms: float,
        queue_size: int,
        timeout_s: float,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="radapter-infer")
        self._task: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        """Tell whether the batching loop is running."""
        return self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="radapter-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(
                    APIError(503, "shutting_down", "the service is shutting down; retry.")
                )
        self._executor.shutdown(wait=True)

    async def run_in_thread(self, function, *args):
        """Run a callable on the engine thread (variant preparation must not race with inference)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def submit(self, kind: str, variant: Variant, inputs: torch.Tensor) -> torch.Tensor:
        """Encode `inputs` with `variant`, split into batches of at most `max_batch_size` rows.

        Raises:
            APIError: 429 when the queue is full, 504 when the result misses the request timeout.
        """
        chunks = torch.split(inputs, self.max_batch_size)
        loop = asyncio.get_running_loop()
        jobs = []
        for chunk in chunks:
            job = Job(kind, variant, chunk, loop.create_future())
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                for queued in jobs:
                    queued.future.cancel()
                self.metrics.rejected.inc()
                raise APIError(
                    429,
                    "overloaded",
                    "the inference queue is full; retry after a short delay.",
                    headers={"Retry-After": "1"},
                ) from None
            jobs.append(job)
        self.metrics.queue_depth.set(self._queue.qsize())
        try:
            results = await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), self.timeout_s)
        except TimeoutError:
            raise APIError(504, "timeout", f"the request did not finish within {self.timeout_s} s.") from None
        return torch.cat(results)

    async def _loop(self) -> None:
        while True:
            jobs = await self._collect()
            groups: OrderedDict[tuple, list[Job]] = OrderedDict()
            for job in jobs:
                if not job.future.done():  # skip calls whose request already timed out
                    groups.setdefault((job.kind, *job.variant.key), []).append(job)
            for group in groups.values():
                for batch in _split_rows(group, self.max_batch_size):
                    await self._run(batch)

    async def _collect(self) -> list[Job]:
        jobs = [await self._queue.get()]
        rows = len(jobs[0].inputs)
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self._queue.get_nowait()
                    if remaining <= 0
                    else await asyncio.wait_for(self._queue.get(), remaining)
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
            jobs.append(job)
            rows += len(job.inputs)
        self.metrics.queue_depth.set(self._queue.qsize())
        return jobs

    async def _run(self, batch: list[Job]) -> None:
        first = batch[0]
        inputs = torch.cat([job.inputs for job in batch])
        started = time.perf_counter()
        try:
            outputs = await self.run_in_thread(self._encode, first.kind, first.variant.handle, inputs)
        except Exception as error:  # handed to every waiting request, which turns it into a 500
            logger.exception(
                "encoder call failed: kind=%s tenant=%s rows=%d",
                first.kind,
                first.variant.tenant,
                len(inputs),
            )
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self.metrics.batch_latency.labels(kind=first.kind).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(kind=first.kind, tenant=first.variant.tenant).observe(len(inputs))
        offset = 0
        for job in batch:
            rows = len(job.inputs)
            if not job.future.done():
                job.future.set_result(outputs[offset : offset + rows])
            offset += rows

    def _encode(self, kind: str, handle: object, inputs: torch.Tensor) -> torch.Tensor:
        if kind == "image":
            return self.backend.encode_image(handle, inputs)
        if kind == "text":
            return self.backend.encode_text(handle, inputs)
        return self.backend.encode_dense(handle, inputs)


def _split_rows(jobs: list[Job], max_rows: int) -> list[list[Job]]:
    batches: list[list[Job]] = [[]]
    rows = 0
    for job in jobs:
        if batches[-1] and rows + len(job.inputs) > max_rows:
            batches.append([])
            rows = 0
        batches[-1].append(job)
        rows += len(job.inputs)
    return batches
