"""`radapter evaluate`: ID and OOD accuracy or recall of zero-shot and fine-tuned models, with alpha sweeps.

Zero-shot heads are rebuilt from each evaluated model's own text tower, adapted and re-scaled, with
the task's prompt templates. Runs that trained a class head (full-ft, linear-probe) use that head.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from training.data.datasets import (
    PROMPT_TEMPLATES,
    ClassificationDataset,
    SegmentationDataset,
    class_display_name,
    load_classes,
)
from training.data.manifest import ManifestRecord, load_manifest
from training.zero_shot import build_classifier, retrieval_recall, top1_accuracy

from .finetune import sweep_report
from .finetune.runtime import command_line, git_commit, peak_memory_mb, reset_peak_memory
from .finetune.segmentation import mean_iou, segmentation_class_names
from .finetune.systems import SweepSystem, load_run_system, load_zero_shot_system

logger = logging.getLogger(__name__)

# Test manifests per task, as `radapter data build` names them.
SUITE_PATTERNS = {
    "classification": ("id-val.jsonl", "id-test.jsonl", "ood-*.jsonl"),
    "retrieval": ("retrieval-test-*.jsonl",),
    "segmentation": ("segmentation-test-*.jsonl",),
}
# The in-distribution segmentation test set; every other segmentation-test-* set is OOD.
ID_SEGMENTATION_SET = "segmentation-test-id"
ALPHAS = tuple(round(0.1 * index, 1) for index in range(11))
# The benchmark's in-distribution retrieval gallery; every other retrieval-test-* style is OOD.
ID_RETRIEVAL_STYLE = "noto"

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


# -- device placement -----------------------------------------------------------------------------------


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


class OnDevice(nn.Module):
    """Run `encode_image` / `encode_text` on the model's device and return CPU tensors.

    The scoring functions of `training.zero_shot` feed CPU batches and compare on the CPU, so this
    wrapper lets them evaluate a model that sits on a GPU.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.device = model_device(model)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self.device)).float().cpu()

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens.to(self.device)).float().cpu()


# -- evaluation suites ---------------------------------------------------------------------------------


@dataclass
class Suite:
    """The manifests one evaluation runs over, each named as in the results."""

    task: str
    manifests: dict[str, list[ManifestRecord]]
    classes: list[str]

    def ood_names(self) -> list[str]:
        return [name for name in self.manifests if name.startswith("ood-") or name.startswith("extra-")]


def build_suite(
    task: str,
    data: Path | None,
    extra_ood: Sequence[str] = (),
    limit: int | None = None,
    classes: Sequence[str] | None = None,
) -> Suite:
    """Collect the task's test manifests in `data` (see SUITE_PATTERNS) plus extra OOD sets."""
    paths: dict[str, Path] = {}
    if data is not None:
        if not data.is_dir():
            raise FileNotFoundError(
                f"--data {data} is not a folder; pass the output of `radapter data build`."
            )
        patterns = SUITE_PATTERNS[task]
        for pattern in patterns:
            for path in sorted(data.glob(pattern)):
                paths[path.stem] = path
    for item in extra_ood:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            raise ValueError(
                f"--extra-ood {item!r} is invalid; write NAME=PATH, e.g. my-style=my-style.jsonl."
            )
        paths[f"extra-{name}"] = Path(path)
    if not paths:
        raise ValueError(
            f"no {task} manifests found; pass --data DIR with the benchmark, or --extra-ood NAME=PATH."
        )
    manifests = {name: load_manifest(path)[:limit] for name, path in paths.items()}
    if task in ("classification", "segmentation") and classes is None:
        classes_path = data / "classes.json" if data is not None else None
        if classes_path is not None and classes_path.is_file():
            classes = load_classes(classes_path)
        else:
            classes = sorted(
                {record.label for records in manifests.values() for record in records if record.label}
            )
    return Suite(task, manifests, list(classes or []))


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    tokenizer: Tokenizer,
    transform: Callable,
    suite: Suite,
    head: torch.Tensor | None = None,
    templates: Sequence[str] = PROMPT_TEMPLATES,
    batch_size: int = 128,
) -> dict[str, float]:
    """Evaluate one model on every manifest of `suite`; add the OOD mean (and the ID alias for retrieval)."""
    model.eval()
    if suite.task == "segmentation":
        return segmentation_metrics(model, tokenizer, transform, suite, templates, batch_size)

    encoder = OnDevice(model)
    metrics: dict[str, float] = {}
    if suite.task == "classification":
        if head is None:
            names = [class_display_name(name) for name in suite.classes]
            head = build_classifier(encoder, tokenizer, names, templates)
        for name, records in suite.manifests.items():
            dataset = ClassificationDataset(records, transform, classes=suite.classes)
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
            metrics[name] = top1_accuracy(encoder, head.float(), loader)
        ood = [metrics[name] for name in suite.ood_names()]
        if ood:
            metrics["ood-mean"] = sum(ood) / len(ood)
        return metrics

    per_set = {
        name: retrieval_recall(encoder, tokenizer, transform, records, batch_size=batch_size)
        for name, records in suite.manifests.items()
    }
    for name, values in per_set.items():
        metrics.update({f"{name}/{key}": value for key, value in values.items()})
    id_name = f"retrieval-test-{ID_RETRIEVAL_STYLE}"
    if id_name in per_set:
        metrics.update({f"id/{key}": value for key, value in per_set[id_name].items()})
    ood = [values for name, values in per_set.items() if name != id_name]
    for key in ood[0] if ood else ():
        metrics[f"ood-mean/{key}"] = sum(values[key] for values in ood) / len(ood)
    return metrics


def segmentation_metrics(
    model: nn.Module,
    tokenizer: Tokenizer,
    transform: Callable,
    suite: Suite,
    templates: Sequence[str],
    batch_size: int,
) -> dict[str, float]:
    """Return mIoU per set, `id/mIoU` (segmentation-test-id) and `ood-mean/mIoU` over the other sets."""
    names = segmentation_class_names(suite.classes)
    texts = build_classifier(OnDevice(model), tokenizer, names, templates)  # (K, D)
    metrics = {}
    for name, records in suite.manifests.items():
        dataset = SegmentationDataset(records, transform, suite.classes)
        metrics[f"{name}/mIoU"] = mean_iou(model, texts, dataset, batch_size)
    if f"{ID_SEGMENTATION_SET}/mIoU" in metrics:
        metrics["id/mIoU"] = metrics[f"{ID_SEGMENTATION_SET}/mIoU"]
    ood = [
        value
        for key, value in metrics.items()
        if key.startswith(("segmentation-test-", "extra-")) and key != f"{ID_SEGMENTATION_SET}/mIoU"
    ]
    if ood:
        metrics["ood-mean/mIoU"] = sum(ood) / len(ood)
    return metrics


# -- command line ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, help="benchmark folder (`radapter data build` output) with the test manifests"
    )
    parser.add_argument(
        "--run", type=Path, action="append", default=[], help="run folder of `radapter train`; repeatable"
    )
    parser.add_argument("--zero-shot", action="store_true", help="also evaluate the zero-shot base model")
    parser.add_argument("--arch", help="open_clip architecture of the zero-shot model (default: the runs')")
    parser.add_argument(
        "--pretrained", help="base weights of the zero-shot model: a pretrained tag or a file"
    )
    parser.add_argument(
        "--task",
        choices=("classification", "retrieval", "segmentation"),
        help="default: the runs' task, else classification",
    )
    parser.add_argument(
        "--extra-ood", action="append", default=[], metavar="NAME=PATH", help="extra OOD manifest; repeatable"
    )
    parser.add_argument(
        "--alpha", type=float, help="re-scaling / WiSE-FT factor in [0, 1] (default: each run's own)"
    )
    parser.add_argument(
        "--alpha-sweep", action="store_true", help="sweep alpha 0..1 in steps of 0.1 and plot ID vs OOD"
    )
    parser.add_argument(
        "--limit", type=int, help="evaluate only the first N rows of each manifest (quick checks)"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device to evaluate on (default: cuda when available, else cpu)",
    )
    parser.add_argument(
        "--output", type=Path, required=True, help="folder for results.json and the sweep table and plot"
    )


def run(args: argparse.Namespace) -> int:
    results = evaluate_command(args)
    print(json.dumps(results["results"], indent=2, sort_keys=True))
    return 0


def evaluate_command(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate the requested systems, write `results.json` (and the sweep outputs) and return the record."""
    if not args.run and not args.zero_shot:
        raise ValueError("nothing to evaluate: pass --run RUN_DIR (repeatable) and/or --zero-shot.")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha {args.alpha} is invalid; pass a value in [0, 1].")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit} is invalid; pass a positive number of rows.")
    start = time.perf_counter()
    device = torch.device(args.device)
    reset_peak_memory(device)
    systems = [load_run_system(path, device) for path in args.run]
    task = args.task or (systems[0].config.task if systems else "classification")
    mismatched = [str(system.run_dir) for system in systems if system.config.task != task]
    if mismatched:
        raise ValueError(
            f"runs {mismatched} were trained for another task than {task!r}; evaluate them separately."
        )
    if args.zero_shot:
        systems.insert(0, load_zero_shot_system(args.arch, args.pretrained, systems, device))

    classes = systems[0].labels if systems[0].labels else None
    suite = build_suite(task, args.data, args.extra_ood, args.limit, classes)
    results: dict[str, Any] = {}
    sweeps: dict[str, list[dict[str, Any]]] = {}
    for system in systems:
        alpha = system.default_alpha if args.alpha is None else args.alpha
        results[system.name] = {"alpha": alpha, **evaluate_system(system, suite, alpha, args.batch_size)}
        if args.alpha_sweep and system.sweepable:
            sweeps[system.name] = [
                {"alpha": value, **evaluate_system(system, suite, value, args.batch_size)} for value in ALPHAS
            ]
            results[system.name]["best_alpha_on_id_val"] = best_alpha(sweeps[system.name], task)

    record = {
        "command": command_line(),
        "git_commit": git_commit(),
        "task": task,
        "seeds": {system.name: system.config.seed for system in systems if system.config is not None},
        "manifests": {name: len(records) for name, records in suite.manifests.items()},
        "results": results,
        "alpha_sweep": sweeps,
        "wall_time_s": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    if sweeps:
        provenance = (
            f"Written by `{record['command']}` at commit `{record['git_commit']}`, seeds {record['seeds']}, "
            f"in {record['wall_time_s']:.0f} s with a peak memory of {record['peak_memory_mb']:.0f} MiB "
            f"on {record['device']}; details in results.json."
        )
        record["alpha_sweep_files"] = sweep_report.write_sweep(args.output, sweeps, results, task, provenance)
    (args.output / "results.json").write_text(
        json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return record


def evaluate_system(
    system: SweepSystem, suite: Suite, alpha: float | None, batch_size: int
) -> dict[str, float]:
    model, head = system.at_alpha(alpha)
    head = None if head is None else head.cpu()
    if head is not None and system.labels != suite.classes:
        raise ValueError(
            f"{system.name} has a class head over other classes than the evaluated ones; "
            "evaluate runs trained on the same class list together."
        )
    return evaluate_model(
        model, system.tokenizer, system.transform, suite, head, system.templates, batch_size
    )


def best_alpha(sweep: list[dict[str, Any]], task: str) -> float | None:
    """Return the alpha with the best id-val top-1 (classification only; None without id-val)."""
    if task != "classification" or not all("id-val" in row for row in sweep):
        return None
    return max(sweep, key=lambda row: row["id-val"])["alpha"]  # ties go to the smallest alpha
