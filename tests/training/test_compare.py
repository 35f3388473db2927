"""`python -m training.compare` on a tiny benchmark: every run trains, every table has real results."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest
from helpers import TINY

sys.path.insert(0, str(Path(__file__).parent))
from test_train_fixtures import one_thread, write_tiny_benchmark, write_tiny_weights  # noqa: E402, F401

from training.compare import (  # noqa: E402
    ABLATION_RUNS,
    ABLATION_STEPS,
    FEW_SHOT_RUNS,
    METHOD_RUNS,
    RETRIEVAL_RUNS,
    add_arguments,
    fit_few_shot_batch,
    main,
    run_values,
    train_once,
)
from training.finetune import TrainConfig, load_recipe  # noqa: E402


def test_compare_writes_every_table(tmp_path):
    data = write_tiny_benchmark(tmp_path / "data", per_class=6)
    weights = write_tiny_weights(tmp_path / "base.safetensors")
    results = tmp_path / "RESULTS.md"
    argv = [
        "--data", str(data), "--arch", TINY, "--pretrained", str(weights),
        "--out", str(tmp_path / "runs"), "--results", str(results),
        "--max-steps", "1", "--batch-size", "6", "--warmup-steps", "0", "--precision", "fp32",
        "--extra-seeds", "1",
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
    assert (tmp_path / "RESULTS-alpha-sweep.png").is_file()
    assert "](RESULTS-alpha-sweep.png)" in text
    assert "| 1.0 | " in text.split("## Alpha sweep")[1].split("##")[0]
    for run in ABLATION_RUNS:
        assert f"| {run.name} |" in text
    # Every method row of the classification table carries numbers from a finished evaluation.
    section = text.split("## Classification")[1].split("##")[0]
    rows = [
        line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")
    ]
    assert len(rows) == 7
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(0.0 <= float(cell) <= 100.0 for cell in cells[3:]), row
    goals = text.split("## Goals")[1].split("##")[0]
    verdicts = [
        line.rsplit("|", 2)[1].strip() for line in goals.splitlines() if line.startswith(("| OOD", "| ID"))
    ]
    assert len(verdicts) == 3
    assert set(verdicts) <= {"yes", "no"}
    assert "| 4 | WiSE-FT (alpha on id-val) |" in text
    assert "Means over 2 seed(s) (0, 1)" in goals
    assert [line.split("|")[1].strip() for line in goals.splitlines() if line.startswith("| ")][-2:] == [
        "0",
        "1",
    ]

    # A second call reuses the finished runs instead of training again.
    merged, evaluation = tmp_path / "runs" / "r-adapter" / "merged.safetensors", tmp_path / "runs" / "eval"
    mtimes = [merged.stat().st_mtime, (evaluation / "main" / "results.json").stat().st_mtime]
    assert main(argv) == 0
    assert merged.stat().st_mtime == mtimes[0]
    assert (evaluation / "main" / "results.json").stat().st_mtime == mtimes[1]
    # Only the time of the invocation itself changes in the report.
    invocation = re.compile(r"this invocation: \d+ s")
    assert invocation.sub("", results.read_text()) == invocation.sub("", text)


def test_compare_rejects_changed_finished_run(tmp_path, capsys):
    data, weights = tmp_path / "data", tmp_path / "base.safetensors"
    common = [
        "--data",
        str(data),
        "--arch",
        TINY,
        "--pretrained",
        str(weights),
        "--out",
        str(tmp_path / "runs"),
    ]
    settings = ["--batch-size", "6", "--warmup-steps", "0", "--precision", "fp32"]
    train_once(quick_run_config(tmp_path))
    mtime = (tmp_path / "runs" / "r-adapter" / "merged.safetensors").stat().st_mtime

    assert main([*common, *settings, "--max-steps", "2", "--results", str(tmp_path / "R.md")]) == 2

    error = capsys.readouterr().err
    assert "r-adapter contains a finished run with different settings (max_steps: 1 -> 2)" in error
    assert (tmp_path / "runs" / "r-adapter" / "merged.safetensors").stat().st_mtime == mtime
    assert not (tmp_path / "R.md").exists()


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


QUICK = {"max_steps": 1, "batch_size": 6, "warmup_steps": 0, "precision": "fp32"}


def quick_run_config(tmp_path, **changes) -> TrainConfig:
    """Return the config of a one-step `r-adapter` comparison run on the tiny benchmark in tmp_path."""
    data = tmp_path / "data"
    if not data.is_dir():
        write_tiny_benchmark(data, per_class=6)
    weights = tmp_path / "base.safetensors"
    if not weights.is_file():
        write_tiny_weights(weights)
    args = parse(
        ["--data", str(data), "--arch", TINY, "--pretrained", str(weights), "--out", str(tmp_path / "runs")]
    )
    return TrainConfig.from_dict(run_values(METHOD_RUNS[0], args, {**QUICK, **changes}))


def test_ablation_adds_one_ingredient_per_step():
    recipe = load_recipe("classification")
    values = [{**recipe, **run.overrides} for run in ABLATION_RUNS]

    assert [label for label, _ in ABLATION_STEPS][:2] == ["base adapter", "+ Adapter Dropping"]
    assert values[0]["drop_prob"] == 0.0
    assert values[0]["ema_momentum"] == 0.0
    assert values[0]["alpha"] == 1.0
    assert values[0]["loss"] == "info-nce"
    assert values[0]["label_smoothing"] == 0.0
    assert values[1]["drop_prob"] == recipe["drop_prob"]
    assert values[2]["ema_momentum"] == recipe["ema_momentum"]
    assert values[3]["alpha"] == recipe["alpha"]
    assert "loss" not in ABLATION_RUNS[4].overrides
    assert values[4]["label_smoothing"] == 0.0
    # Each step differs from the one before in exactly one ingredient.
    for before, after in zip(values, values[1:], strict=False):
        assert len([key for key in {*before, *after} if after.get(key) != before.get(key)]) == 1


def test_run_values_per_method_overrides(tmp_path):
    data = write_tiny_benchmark(tmp_path / "data", per_class=6)
    args = parse(
        ["--data", str(data), "--arch", TINY, "--out", str(tmp_path / "runs"), "--lr", "3e-4",
         "--ema-momentum", "0.99", "--epochs", "7", "--retrieval-epochs", "3", "--full-ft-lr", "2e-5",
         "--few-shot-lr", "4e-3"]
    )  # fmt: skip
    shared = {"lr": 3e-4, "ema_momentum": 0.99, "epochs": 7}

    adapter = run_values(METHOD_RUNS[0], args, shared)
    full_ft = run_values(METHOD_RUNS[1], args, shared)
    base = run_values(ABLATION_RUNS[0], args, shared)
    ema = run_values(ABLATION_RUNS[2], args, shared)
    retrieval = run_values(RETRIEVAL_RUNS[0], args, shared)
    few_shot = [run_values(run, args, shared) for run in FEW_SHOT_RUNS]

    assert (adapter["lr"], adapter["epochs"], adapter["ema_momentum"]) == (3e-4, 7, 0.99)
    assert full_ft["lr"] == 2e-5
    assert base["ema_momentum"] == 0.0  # the ablation's switch wins over the shared momentum
    assert ema["ema_momentum"] == 0.99
    assert retrieval["epochs"] == 3
    assert [(values["method"], values["lr"]) for values in few_shot] == [
        ("r-adapter", 4e-3),
        ("r-adapter", 4e-3),
        ("full-ft", 2e-5),
        ("full-ft", 2e-5),
    ]
    assert adapter["output"] == str(tmp_path / "runs" / "r-adapter")


def test_compare_fits_few_shot_batch(tmp_path):
    data = write_tiny_benchmark(tmp_path / "data", per_class=6)
    small, large = {"shots": 4, "batch_size": 512}, {"shots": 16, "batch_size": 512}

    fit_few_shot_batch(small, data)
    fit_few_shot_batch(large, data)

    assert small["batch_size"] == 4 * 3
    assert large["batch_size"] == 6 * 3  # every class has only 6 images


def test_compare_rejects_repeated_extra_seed(tmp_path, capsys):
    data = write_tiny_benchmark(tmp_path / "data", per_class=6)
    argv = ["--data", str(data), "--arch", TINY, "--out", str(tmp_path / "runs"), "--extra-seeds", "0"]

    assert main(argv) == 2

    assert "--extra-seeds 0 repeats a seed (the main runs use seed 0)" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--full-ft-lr", "-1"], "--full-ft-lr -1.0 is invalid"),
        (["--few-shot-lr", "0"], "--few-shot-lr 0.0 is invalid"),
        (["--retrieval-epochs", "0"], "--retrieval-epochs 0 is invalid"),
        (["--eval-limit", "0"], "--eval-limit 0 is invalid"),
        (["--extra-seeds", "-1"], "--extra-seeds -1 is invalid"),
        (["--segmentation-epochs", "-2"], "--segmentation-epochs -2 is invalid"),
    ],
)
def test_compare_rejects_bad_flag_before_training(tmp_path, capsys, flags, message):
    data = write_tiny_benchmark(tmp_path / "data", per_class=6)
    argv = [
        "--data",
        str(data),
        "--arch",
        TINY,
        "--out",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "R.md"),
    ]

    assert main([*argv, *flags]) == 2

    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_compare_rejects_results_folder(tmp_path, capsys):
    data = write_tiny_benchmark(tmp_path / "data", per_class=6)
    argv = ["--data", str(data), "--arch", TINY, "--out", str(tmp_path / "runs"), "--results", str(tmp_path)]

    assert main(argv) == 2

    assert f"--results {tmp_path} is a folder" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_compare_names_damaged_summary(tmp_path):
    config = quick_run_config(tmp_path)
    train_once(config)
    summary = tmp_path / "runs" / "r-adapter" / "summary.json"
    summary.write_text(summary.read_text()[:50])

    with pytest.raises(ValueError, match=r"summary.json is not valid JSON .*; delete .*r-adapter and rerun"):
        train_once(config)


def test_compare_reuses_run_with_respelled_paths(tmp_path, monkeypatch):
    train_once(quick_run_config(tmp_path))
    merged = tmp_path / "runs" / "r-adapter" / "merged.safetensors"
    mtime = merged.stat().st_mtime
    monkeypatch.chdir(tmp_path)
    relative = parse(
        ["--data", "data/../data", "--arch", TINY, "--pretrained", "base.safetensors", "--out", "runs"]
    )

    train_once(TrainConfig.from_dict(run_values(METHOD_RUNS[0], relative, QUICK)))

    assert merged.stat().st_mtime == mtime


def test_compare_rejects_changed_unfinished_run(tmp_path):
    train_once(quick_run_config(tmp_path))
    (tmp_path / "runs" / "r-adapter" / "summary.json").unlink()  # as if stopped before the outputs
    changed = quick_run_config(tmp_path, lr=1e-3)

    with pytest.raises(ValueError, match=r"contains an unfinished run with different settings \(lr: "):
        train_once(changed)
