"""Benchmark the inference service: HTTP vs in-process throughput, overlay cost, memory and hot-swap.

Run: `python benchmarks/bench_service.py [--duration 15] [--concurrency 16] [--backends torch onnxruntime]`.
Writes benchmarks/results/service.md and service.json. Throughput runs on a random-init ViT-S-32 so the
whole script takes a few minutes on a 2-core CPU; memory and swap times use a random-init ViT-B-16.
Numbers depend on the CPU and on what else runs on it, so the load average is recorded per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import onnxruntime as ort
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.metrics import Metrics  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.state import ServiceState  # noqa: E402
from training.models import weights_sha256  # noqa: E402
from training.radapter import (  # noqa: E402
    AdapterMetadata,
    RAdapterConfig,
    adapter_state_dict,
    inject_adapters,
    iter_adapters,
    save_adapter,
)

SMALL_ARCH = "ViT-S-32"
LARGE_ARCH = "ViT-B-16"
ADMIN_KEY = "bench-admin-key-0123456789"
TENANT_KEY = "bench-acme-key-0123456789"
LABELS = ["cat", "dog", "fox", "car", "tree", "house", "bird", "boat", "plane", "flower"]
WARMUP_S = 3.0


# ---------------------------------------------------------------------------------------------- setup


def perturbed_adapters(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Give every adapter of `model` random non-identity weights and return the adapter tensors."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, adapter in iter_adapters(model):
            for name, parameter in adapter.named_parameters(recurse=False):
                if name == "scale":
                    parameter.fill_(0.3)
                else:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return adapter_state_dict(model)


def write_backbone_and_adapters(arch: str, root: Path, versions: dict[str, list[str]]) -> tuple[Path, Path]:
    """Save random `arch` weights and, per tenant, non-identity full-rank adapters for `versions`."""
    torch.manual_seed(0)
    model = open_clip.create_model(arch).eval()
    weights = root / f"{arch}.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(weights))
    sha256 = weights_sha256(model.state_dict())

    config = RAdapterConfig(alpha=0.5)
    inject_adapters(model, config)
    metadata = AdapterMetadata(
        base_architecture=arch,
        base_weights_sha256=sha256,
        config=config,
        task="classification",
        labels=LABELS,
        templates=["a photo of a {}."],
    )
    store = root / f"store-{arch}"
    for seed, (tenant, tenant_versions) in enumerate(versions.items()):
        for offset, version in enumerate(tenant_versions):
            tensors = perturbed_adapters(model, seed=100 * seed + offset)
            save_adapter(store / tenant / version, tensors, metadata)
    return weights, store


def image_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize((320, 240)).save(buffer, format="JPEG")
    return buffer.getvalue()


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status; RSS is measured on Linux only")


def summarize(latencies: list[float], errors: Counter, elapsed_s: float) -> dict:
    """Throughput and latency percentiles (ms) of one load phase."""
    if len(latencies) < 2:
        raise RuntimeError(f"only {len(latencies)} successful requests; errors: {dict(errors)}")
    percentiles = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "errors": dict(errors),
        "throughput_rps": len(latencies) / elapsed_s,
        "p50_ms": percentiles[49] * 1000,
        "p99_ms": percentiles[98] * 1000,
    }


# -------------------------------------------------------------------------------------- load drivers


async def drive(request: Callable, concurrency: int, duration_s: float) -> tuple[list[float], Counter, float]:
    """Run `concurrency` closed-loop users of `request` for `duration_s`; return latencies, errors, time."""
    latencies: list[float] = []
    errors: Counter = Counter()
    deadline = time.monotonic() + duration_s

    async def user() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            outcome = await request()
            if outcome is None:
                latencies.append(time.perf_counter() - started)
            else:
                errors[outcome] += 1

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def http_request(client: httpx.AsyncClient, body: dict) -> Callable:
    async def request() -> str | None:
        try:
            response = await client.post("/v1/tenants/acme/classify", json=body)
        except httpx.HTTPError as error:
            return type(error).__name__
        return None if response.status_code == 200 else f"HTTP {response.status_code}"

    return request


def engine_request(state: ServiceState, pixels: torch.Tensor) -> Callable:
    """Build one classify call without HTTP: variant lookup, batched image encoding and the label head."""

    async def request() -> str | None:
        variant = await state.registry.variant("acme")
        embeddings = await state.worker.submit("image", variant, pixels)
        (state.backbone.logit_scale * embeddings @ variant.head.T).softmax(dim=-1)
        return None

    return request


# ------------------------------------------------------------------------------------------- phases


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(environment: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "training.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **environment}, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 600  # an ONNX export of every tenant happens before readiness
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"radapter serve exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"radapter serve was not ready within 600 s; see {log}")


async def swap_under_load(client: httpx.AsyncClient, body: dict, args: argparse.Namespace) -> dict:
    """Classify at full concurrency while the admin API flips acme between v1 and v2."""
    swap_times: list[float] = []
    swap_errors: list[str] = []
    stop = asyncio.Event()

    async def swapper() -> None:
        index = 0
        while not stop.is_set():
            version = "v2" if index % 2 == 0 else "v1"
            started = time.perf_counter()
            response = await client.put(
                "/v1/admin/tenants/acme/adapter/active",
                json={"version": version},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            swap_times.append(time.perf_counter() - started)
            if response.status_code != 200:
                swap_errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
            index += 1
            await asyncio.sleep(args.swap_interval)

    task = asyncio.create_task(swapper())
    latencies, errors, elapsed = await drive(http_request(client, body), args.concurrency, args.duration)
    stop.set()
    await task
    result = summarize(latencies, errors, elapsed)
    result.update(
        swaps=len(swap_times), swap_errors=swap_errors, swap_p50_ms=statistics.median(swap_times) * 1000
    )
    return result


async def http_phase(backend: str, weights: Path, store: Path, work: Path, args: argparse.Namespace) -> dict:
    port = free_port()
    environment = {
        "RADAPTER_BACKBONE_ARCH": SMALL_ARCH,
        "RADAPTER_BACKBONE_PRETRAINED": str(weights),
        "RADAPTER_ADAPTER_STORE": str(store),
        "RADAPTER_ONNX_CACHE_DIR": str(work / "onnx"),
        "RADAPTER_BACKEND": backend,
        "RADAPTER_ADMIN_API_KEY": ADMIN_KEY,
        "RADAPTER_TENANT_API_KEYS": json.dumps({"acme": TENANT_KEY}),
        "RADAPTER_MAX_BATCH_SIZE": str(args.max_batch_size),
        "RADAPTER_CONFIG_FILE": "",
    }
    started = time.perf_counter()
    server = start_server(environment, port, work / f"server-{backend}.log")
    result = {"startup_s": time.perf_counter() - started}
    body = {"images": [base64.b64encode(image_bytes()).decode()]}
    headers = {"Authorization": f"Bearer {TENANT_KEY}"}
    limits = httpx.Limits(max_connections=args.concurrency + 1)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=120
        ) as client:
            await drive(http_request(client, body), args.concurrency, WARMUP_S)
            result["load_before"] = load_average()
            result["http"] = summarize(
                *await drive(http_request(client, body), args.concurrency, args.duration)
            )
            result["load_after"] = load_average()
            if backend == "onnxruntime":  # each swap exports v2 once, then reuses it
                await client.put(
                    "/v1/admin/tenants/acme/adapter/active",
                    json={"version": "v2"},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                )
            result["swap_under_load"] = await swap_under_load(client, body, args)
            result["load_after_swaps"] = load_average()
    finally:
        server.terminate()
        server.wait(timeout=60)
    return result


async def engine_phase(
    backend: str, weights: Path, store: Path, work: Path, args: argparse.Namespace
) -> dict:
    settings = Settings(
        backbone_arch=SMALL_ARCH,
        backbone_pretrained=str(weights),
        adapter_store=store,
        onnx_cache_dir=work / "onnx",
        backend=backend,
        max_batch_size=args.max_batch_size,
    )
    (store / "acme" / "ACTIVE").write_text("v1\n")
    state = await ServiceState.start(settings, Metrics())
    try:
        pixels = state.backbone.pixels([Image.open(io.BytesIO(image_bytes())).convert("RGB")])
        request = engine_request(state, pixels)
        await drive(request, args.concurrency, WARMUP_S)
        result = {"load_before": load_average()}
        result["engine"] = summarize(*await drive(request, args.concurrency, args.duration))
        result["load_after"] = load_average()
        variant = await state.registry.variant("acme")
        result["variant_nbytes"] = variant.nbytes
        if backend == "torch":
            result["merged_vs_base"] = merged_vs_base(state, variant.handle, args.repeats)
    finally:
        await state.stop()
    return result


def interleaved_medians(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Time each function `repeats` times in round-robin order, so load drift hits all of them alike."""
    for function in functions.values():
        function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def merged_vs_base(state: ServiceState, handle: object, repeats: int, batches=(1, 8)) -> dict:
    """Median encoder latency (ms) with the tenant overlay vs the bare backbone (an empty overlay)."""
    backend = state.backend
    result = {}
    for batch in batches:
        pixels = torch.randn(batch, 3, *state.backbone.image_size)
        calls = {
            "base": lambda pixels=pixels: backend.encode_image({}, pixels),
            "merged": lambda pixels=pixels: backend.encode_image(handle, pixels),
        }
        medians = interleaved_medians(calls, repeats)
        result[f"batch {batch}"] = {**medians, "ratio": medians["merged"] / medians["base"]}
    return result


async def large_model_phase(work: Path, args: argparse.Namespace) -> dict:
    """ViT-B-16: RSS per additional tenant, overlay vs state-dict bytes, swap times, merged vs base."""
    tenants = [f"t{index}" for index in range(args.tenants)]
    weights, store = write_backbone_and_adapters(LARGE_ARCH, work, {t: ["v1", "v2"] for t in tenants})
    settings = Settings(backbone_arch=LARGE_ARCH, backbone_pretrained=str(weights), adapter_store=store)
    state = await ServiceState.start(settings, Metrics())
    try:
        state_dict_bytes = sum(
            t.numel() * t.element_size() for t in state.backbone.model.state_dict().values()
        )
        gc.collect()
        rss = [rss_bytes()]
        for tenant in tenants:
            await state.registry.activate(tenant, "v1")
            gc.collect()
            rss.append(rss_bytes())
        adapter = state.registry.get(tenants[0])
        variant = await state.registry.variant(tenants[0])
        swaps = []
        for index in range(args.swaps):
            started = time.perf_counter()
            await state.registry.activate(tenants[0], "v2" if index % 2 == 0 else "v1")
            swaps.append(time.perf_counter() - started)
        latency = merged_vs_base(state, variant.handle, max(3, args.repeats // 5), batches=(1,))
    finally:
        await state.stop()
    deltas = [after - before for before, after in zip(rss, rss[1:], strict=False)]
    return {
        "state_dict_bytes": state_dict_bytes,
        "overlay_bytes": variant.handle_nbytes,
        "adapter_bytes": sum(t.numel() * t.element_size() for t in adapter.tensors.values()),
        "rss_bytes": rss,
        "rss_delta_per_tenant_bytes": deltas,
        "swap_s": swaps,
        "merged_vs_base": latency,
        "load_after": load_average(),
    }


# ------------------------------------------------------------------------------------------- report


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}; "
        f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {ort.__version__}, open_clip {open_clip.__version__}"
    )


def mib(value: float) -> str:
    return f"{value / 1024**2:.1f} MiB"


def verdict(reached: bool) -> str:
    return "reached" if reached else "not reached"


def load_rows(name: str, result: dict) -> list[str]:
    return [
        f"| {name}: throughput | {result['throughput_rps']:.1f} req/s |",
        f"| {name}: p50 / p99 latency | {result['p50_ms']:.1f} / {result['p99_ms']:.1f} ms |",
        f"| {name}: requests / errors | {result['requests']} / {result['errors'] or 0} |",
    ]


def backend_section(backend: str, http: dict, engine: dict, args: argparse.Namespace) -> list[str]:
    ratio = http["http"]["throughput_rps"] / engine["engine"]["throughput_rps"]
    swap = http["swap_under_load"]
    lines = [
        f"### {backend} engine, {SMALL_ARCH}, one image per request, concurrency {args.concurrency}",
        "",
        "| measurement | value |",
        "|---|---|",
        *load_rows("HTTP (uvicorn, classify)", http["http"]),
        *load_rows("in-process engine", engine["engine"]),
        f"| HTTP / in-process throughput (target >= 0.80) | {ratio:.2f}, {verdict(ratio >= 0.8)} |",
        f"| load average during HTTP run (before, after) | {http['load_before']}, {http['load_after']} |",
        f"| load average during in-process run (before, after) | {engine['load_before']}, "
        f"{engine['load_after']} |",
        f"| server startup to ready (includes ONNX exports of empty caches) | {http['startup_s']:.1f} s |",
        f"| one tenant variant, as counted by the overlay cache | {mib(engine['variant_nbytes'])} |",
        *load_rows("HTTP while swapping acme v1 <-> v2", swap),
        f"| swaps during that run / failed swaps | {swap['swaps']} / {len(swap['swap_errors'])} |",
        f"| swap request p50 under load | {swap['swap_p50_ms']:.0f} ms |",
        f"| failed requests while swapping (target 0) | {sum(swap['errors'].values())}, "
        f"{verdict(not swap['errors'] and not swap['swap_errors'])} |",
    ]
    for batch, row in engine.get("merged_vs_base", {}).items():
        lines.append(
            f"| image encoder {batch}: base / merged tenant, median of {args.repeats} | "
            f"{row['base']:.2f} / {row['merged']:.2f} ms, ratio {row['ratio']:.3f} "
            f"(target <= 1.02, {verdict(row['ratio'] <= 1.02)}) |"
        )
    return lines + [""]


def large_section(large: dict) -> list[str]:
    deltas = large["rss_delta_per_tenant_bytes"]
    swaps = large["swap_s"]
    row = large["merged_vs_base"]["batch 1"]
    return [
        f"### {LARGE_ARCH} (random weights), torch engine, full-rank adapters",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| full model state dict (float32) | {mib(large['state_dict_bytes'])} |",
        f"| merged overlay of one tenant (out_proj + c_proj, both towers) | {mib(large['overlay_bytes'])} "
        f"({large['overlay_bytes'] / large['state_dict_bytes']:.1%} of the state dict) |",
        f"| adapter tensors kept per active version (for other alphas) | {mib(large['adapter_bytes'])} |",
        f"| RSS after start, no tenants | {mib(large['rss_bytes'][0])} |",
        f"| RSS growth per additional tenant | {', '.join(mib(d) for d in deltas)} |",
        f"| hot-swap (load, validate, merge, label head), each | {', '.join(f'{s:.2f}' for s in swaps)} s |",
        f"| image encoder batch 1: base / merged tenant | {row['base']:.0f} / {row['merged']:.0f} ms, ratio "
        f"{row['ratio']:.3f} (target <= 1.02, {verdict(row['ratio'] <= 1.02)}) |",
        f"| load average at the end | {large['load_after']} |",
        "",
    ]


def write_report(results: dict, args: argparse.Namespace) -> None:
    lines = [
        "# Service benchmark",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Machine: {machine()}  ",
        f"Load average (1, 5, 15 min) at start: {results['load_start']}; at end: {results['load_end']}.  ",
        f"Run took {results['total_s']:.0f} s. The client, the server and other users share the CPU.",
        "",
        "The HTTP rows send `POST /v1/tenants/acme/classify` (one 320x240 JPEG as base64 JSON) to",
        "`radapter serve` on 127.0.0.1 from an httpx async client with a fixed number of closed-loop",
        "users. The in-process rows run the same classify work (variant lookup, batched image encoding",
        "through the worker, label head) in the benchmark process, without HTTP, JSON or image decoding.",
        "",
    ]
    for backend in args.backends:
        lines += backend_section(backend, results[backend]["http"], results[backend]["engine"], args)
    if "large" in results:
        lines += large_section(results["large"])
    args.output.write_text("\n".join(lines))
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


async def run(args: argparse.Namespace) -> dict:
    results: dict = {"load_start": load_average(), "argv": sys.argv}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as directory:
        work = Path(directory)
        weights, store = write_backbone_and_adapters(SMALL_ARCH, work, {"acme": ["v1", "v2"]})
        for backend in args.backends:
            (store / "acme" / "ACTIVE").write_text("v1\n")
            results[backend] = {"http": await http_phase(backend, weights, store, work, args)}
            results[backend]["engine"] = await engine_phase(backend, weights, store, work, args)
        if args.tenants > 0:
            results["large"] = await large_model_phase(work, args)
    results["load_end"] = load_average()
    results["total_s"] = time.perf_counter() - started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measured load phase")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop client users")
    parser.add_argument(
        "--max-batch-size", type=int, default=32, help="RADAPTER_MAX_BATCH_SIZE of the server"
    )
    parser.add_argument("--swap-interval", type=float, default=0.5, help="seconds between swaps under load")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per merged-vs-base median")
    parser.add_argument(
        "--tenants", type=int, default=3, help="ViT-B-16 tenants for the memory phase (0 skips it)"
    )
    parser.add_argument("--swaps", type=int, default=4, help="ViT-B-16 hot-swaps to time")
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"]
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "service.md")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    write_report(results, args)
    print(args.output.read_text())


if __name__ == "__main__":
    main()
