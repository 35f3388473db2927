"""Alpha-sweep outputs: a Markdown table and an ID-vs-OOD plot of R-Adapter and WiSE-FT curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # render to files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

TABLE_NAME = "alpha_sweep.md"
PLOT_NAME = "alpha_sweep.png"


def headline(metrics: dict[str, Any], task: str) -> tuple[float | None, float | None]:
    """Return (ID, OOD mean): top-1 on id-test, mIoU, or the mean R@1 of both retrieval directions."""
    if task == "classification":
        return metrics.get("id-test"), metrics.get("ood-mean")
    if task == "segmentation":
        return metrics.get("id/mIoU"), metrics.get("ood-mean/mIoU")

    def mean_r1(prefix: str) -> float | None:
        keys = [f"{prefix}/image_to_text_R@1", f"{prefix}/text_to_image_R@1"]
        return sum(metrics[key] for key in keys) / 2 if all(key in metrics for key in keys) else None

    return mean_r1("id"), mean_r1("ood-mean")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def sweep_table(sweeps: dict[str, list[dict[str, Any]]], task: str) -> str:
    """Return a Markdown table with one row per alpha and ID / OOD columns per swept system."""
    names = list(sweeps)
    header = "| alpha | " + " | ".join(f"{name} ID | {name} OOD" for name in names) + " |"
    rule = "|---:|" + "---:|---:|" * len(names)
    rows = [header, rule]
    for index, row in enumerate(next(iter(sweeps.values()))):
        cells = []
        for name in names:
            identity, ood = headline(sweeps[name][index], task)
            cells.append(f"{_cell(identity)} | {_cell(ood)}")
        rows.append(f"| {row['alpha']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot_sweep(
    path: Path, sweeps: dict[str, list[dict[str, Any]]], results: dict[str, Any], task: str
) -> None:
    """Plot OOD against ID for every swept system, with the zero-shot and fine-tuned points marked."""
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for name, rows in sweeps.items():
        points = [headline(row, task) for row in rows]
        axes.plot([x for x, _ in points], [y for _, y in points], marker=".", label=f"{name} (alpha 0 to 1)")
        finetuned = headline(results[name], task)
        axes.scatter(
            *finetuned, marker="s", s=50, zorder=3, label=f"{name} at alpha {results[name]['alpha']}"
        )
    zero_shot = results.get("zero-shot")
    if zero_shot is None:  # alpha 0 is the zero-shot model for both R-Adapter and WiSE-FT
        zero_shot = next(iter(sweeps.values()))[0]
    axes.scatter(*headline(zero_shot, task), marker="*", s=150, color="black", zorder=4, label="zero-shot")
    unit = {"classification": "top-1", "segmentation": "mIoU"}.get(task, "mean R@1")
    axes.set_xlabel(f"ID {unit}")
    axes.set_ylabel(f"OOD {unit} (mean over shifts)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_sweep(
    output: Path, sweeps: dict[str, list[dict[str, Any]]], results: dict[str, Any], task: str, provenance: str
) -> dict[str, str]:
    """Write the sweep table (with `provenance` under it) and the plot into `output`; return their paths."""
    table = output / TABLE_NAME
    table.write_text(sweep_table(sweeps, task) + "\n" + provenance + "\n", encoding="utf-8")
    plot = output / PLOT_NAME
    plot_sweep(plot, sweeps, results, task)
    return {"table": str(table), "plot": str(plot)}
