"""`python -m training.compare` on a tiny benchmark: every run trains, every table has real results."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import TINY

sys.path.insert(0, str(Path(__file__).parent))
from test_train_fixtures import one_thread, write_tiny_benchmark, write_tiny_weights  # noqa: E402, F401

from training.compare import ABLATION_RUNS, fit_few_shot_batch, main  # noqa: E402


def test_compare_writes_every_table(tmp_path):
    data = write_tiny_benchmark(tmp_path / "data", per_class=6)
    weights = write_tiny_weights(tmp_path / "base.safetensors")
    results = tmp_path / "RESULTS.md"
    argv = [
        "--data", str(data), "--arch", TINY, "--pretrained", str(weights),
        "--out", str(tmp_path / "runs"), "--results", str(results),
        "--max-steps", "1", "--batch-size", "6", "--warmup-steps", "0", "--precision", "fp32",
    ]  # fmt: skip

    assert main(argv) == 0

    text = results.read_text()
    for heading in (
        "## Classification",
        "## Ablation ladder",
        "## Few-shot",
        "## Retrieval",
        "## Segmentation",
        "## Training cost",
    ):
        assert heading in text
    for label in (
        "| zero-shot |",
        "| full fine-tuning |",
        "| WiSE-FT (alpha on id-val) |",
        "| LoRA |",
        "| linear probe |",
    ):
        assert label in text
    assert "| base adapter |" in text
    assert "| + label smoothing (R-Adapter) |" in text
    assert "| 16 | R-Adapter |" in text
    assert text.split("## Segmentation")[1].count("| R-Adapter |") == 1
    assert (tmp_path / "runs" / "eval" / "main" / "alpha_sweep.png").is_file()
    for run in ABLATION_RUNS:
        assert f"| {run.name} |" in text
    # Every method row of the classification table carries numbers from a finished evaluation.
    section = text.split("## Classification")[1].split("##")[0]
    rows = [
        line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")
    ]
    assert len(rows) == 6
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(0.0 <= float(cell) <= 100.0 for cell in cells[2:]), row

    # A second call reuses the finished runs instead of training again.
    mtime = (tmp_path / "runs" / "r-adapter" / "merged.safetensors").stat().st_mtime
    assert main(argv) == 0
    assert (tmp_path / "runs" / "r-adapter" / "merged.safetensors").stat().st_mtime == mtime


def test_compare_fits_few_shot_batch(tmp_path):
    data = write_tiny_benchmark(tmp_path / "data", per_class=6)
    small, large = {"shots": 4, "batch_size": 512}, {"shots": 16, "batch_size": 512}

    fit_few_shot_batch(small, data)
    fit_few_shot_batch(large, data)

    assert small["batch_size"] == 4 * 3
    assert large["batch_size"] == 6 * 3  # every class has only 6 images
