"""Benchmark the core on a random-init ViT-B-16: merge time, merged vs base latency, ONNX Runtime vs torch.

Run: `python benchmarks/bench_core.py [--repeats N] [--output benchmarks/results/core.md]`.
Writes a Markdown table with the machine description; numbers depend on the CPU and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import open_clip
import torch

from training.export_onnx import export_encoders
from training.radapter import RAdapterConfig, inject_adapters, iter_adapters, merged_state_dict

ARCH = "ViT-B-16"


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def interleaved_timings(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Time each function `repeats` times, round-robin with the order reversed every round.

    Alternating the order spreads load drift from other processes evenly over the functions.
    """
    for function in functions.values():
        function()  # warm-up: allocator, kernels, caches
    samples = {name: [] for name in functions}
    names = list(functions)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            samples[name].append(timed(functions[name]))
    return samples


def summarise(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Return median and minimum per function; the minimum is the least load-sensitive estimate."""
    return {
        name: {"median": statistics.median(values), "min": min(values)} for name, values in samples.items()
    }


def non_identity_adapters(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, adapter in iter_adapters(model):
            adapter.weight.copy_(torch.randn(adapter.weight.shape, generator=generator) * 0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--latency-batch", type=int, default=8)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/core.md"))
    args = parser.parse_args()
    torch.manual_seed(0)
    results: dict[str, object] = {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_before": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }

    base = open_clip.create_model(ARCH).eval()
    adapted = open_clip.create_model(ARCH).eval()
    adapted.load_state_dict(base.state_dict())
    inject_adapters(adapted, RAdapterConfig(alpha=0.5))
    non_identity_adapters(adapted)

    merge_times = [timed(lambda: merged_state_dict(adapted)) for _ in range(3)]
    results["merge_seconds_median_of_3"] = statistics.median(merge_times)
    merged = open_clip.create_model(ARCH).eval()
    merged.load_state_dict(merged_state_dict(adapted))

    images = torch.randn(args.latency_batch, 3, 224, 224)
    with torch.inference_mode():
        latency = summarise(
            interleaved_timings(
                {
                    "base": lambda: base.encode_image(images),
                    "merged": lambda: merged.encode_image(images),
                    "unmerged adapters": lambda: adapted.encode_image(images),
                },
                args.repeats,
            )
        )
    results["image_latency_seconds"] = latency
    for statistic in ("median", "min"):
        results[f"merged_over_base_{statistic}"] = latency["merged"][statistic] / latency["base"][statistic]
        results[f"unmerged_over_base_{statistic}"] = (
            latency["unmerged adapters"][statistic] / latency["base"][statistic]
        )

    with tempfile.TemporaryDirectory() as directory:
        paths = export_encoders(merged, directory)
        session = ort.InferenceSession(str(paths["image"]), providers=["CPUExecutionProvider"])
        throughput = {}
        for batch in (1, 32):
            batch_images = torch.randn(batch, 3, 224, 224)
            feed = {"pixel_values": batch_images.numpy()}
            repeats = args.repeats if batch == 1 else max(2, args.repeats // 4)
            with torch.inference_mode():
                timings = summarise(
                    interleaved_timings(
                        {
                            "torch eager": lambda images=batch_images: torch.nn.functional.normalize(
                                merged.encode_image(images), dim=-1
                            ),
                            "onnxruntime": lambda feed=feed: session.run(None, feed),
                        },
                        repeats,
                    )
                )
            throughput[batch] = {name: batch / stats["median"] for name, stats in timings.items()}
    results["image_throughput_per_second"] = throughput
    results["load_after"] = " ".join(f"{value:.2f}" for value in os.getloadavg())
    write_report(results, args)


def write_report(results: dict, args: argparse.Namespace) -> None:
    latency = results["image_latency_seconds"]
    throughput = results["image_throughput_per_second"]
    lines = [
        "# Core benchmark (random-init ViT-B-16)",
        "",
        "Merged and base models have the same architecture and shapes, so their latency differs only",
        "by measurement noise; the minimum over rounds is the estimate least affected by other load.",
        "",
        "Command: `python benchmarks/bench_core.py "
        f"--repeats {args.repeats} --latency-batch {args.latency_batch}`",
        f"Machine: {platform.processor() or platform.machine()}, {results['cpu_count']} cores, "
        f"torch {torch.__version__} ({results['torch_threads']} threads), onnxruntime {ort.__version__}.",
        f"Load average at the start and end of the run: {results['load_before']} / {results['load_after']}.",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| merge, full rank both towers (median of 3) | {results['merge_seconds_median_of_3']:.2f} s |",
    ]
    for name, stats in latency.items():
        lines.append(
            f"| image encoder latency, batch {args.latency_batch}, {name} (median / min) "
            f"| {stats['median'] * 1000:.0f} / {stats['min'] * 1000:.0f} ms |"
        )
    for kind, label in (("merged", "merged / base"), ("unmerged", "unmerged adapters / base")):
        target = " (target <= 1.02)" if kind == "merged" else ""
        lines.append(
            f"| {label} latency ratio{target}, median / min "
            f"| {results[f'{kind}_over_base_median']:.3f} / {results[f'{kind}_over_base_min']:.3f} |"
        )
    for batch, rates in throughput.items():
        for name, rate in rates.items():
            lines.append(f"| image encoder throughput, batch {batch}, {name} | {rate:.1f} images/s |")
        ratio = rates["onnxruntime"] / rates["torch eager"]
        lines.append(f"| onnxruntime / torch eager, batch {batch} | {ratio:.2f}x |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
