"""`radapter train` on a tiny benchmark: every method learns, resume is exact, outputs load in open_clip."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from helpers import TINY, make_tiny_model
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from test_train_fixtures import one_thread, write_tiny_benchmark, write_tiny_weights  # noqa: E402, F401

from training.cli import main  # noqa: E402
from training.finetune import TrainConfig, load_recipe, train  # noqa: E402
from training.finetune.config import add_config_arguments, config_from_args  # noqa: E402
from training.finetune.data import few_shot_indices  # noqa: E402
from training.finetune.methods import inject_lora, merged_lora_state_dict  # noqa: E402
from training.finetune.systems import load_run_system  # noqa: E402
from training.radapter import load_adapter  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    return {
        "data": write_tiny_benchmark(root / "data"),
        "weights": write_tiny_weights(root / "base.safetensors"),
    }


def tiny_config(bench: dict[str, Path], output: Path, **overrides) -> TrainConfig:
    values = dict(
        arch=TINY,
        pretrained=str(bench["weights"]),
        data=str(bench["data"]),
        output=str(output),
        batch_size=18,
        epochs=50,
        warmup_steps=0,
        lr=2e-3,
        log_every=1,
        precision="fp32",
    )
    values.update(overrides)
    return TrainConfig(**values)


def logged_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}


CASES = [
    ("classification", "r-adapter", {}),
    ("classification", "full-ft", {"lr": 1e-3}),
    ("classification", "lora", {}),
    ("classification", "linear-probe", {"lr": 2e-2}),
    ("retrieval", "r-adapter", {"batch_size": 24}),
    ("retrieval", "full-ft", {"batch_size": 24, "lr": 1e-3}),
    ("retrieval", "lora", {"batch_size": 24}),
    ("segmentation", "r-adapter", {"batch_size": 12, "lr": 1e-2}),
    ("segmentation", "full-ft", {"batch_size": 12, "lr": 1e-3, "loss": "cross-entropy"}),
]


@pytest.mark.parametrize(("task", "method", "overrides"), CASES, ids=[f"{t}-{m}" for t, m, _ in CASES])
def test_train_method_decreases_loss(bench, tmp_path, monkeypatch, task, method, overrides):
    # One full batch per step, one prompt template and no Adapter Dropping, so the loss changes
    # only through learning.
    monkeypatch.setattr("training.finetune.data.PROMPT_TEMPLATES", ("an emoji of {}.",))
    config = tiny_config(
        bench, tmp_path / "run", task=task, method=method, max_steps=4, drop_prob=0.0, **overrides
    )
    summary = train(config)

    losses = logged_losses(tmp_path / "run")
    assert summary["steps"] == 4
    assert losses[4] < losses[1], losses
    # Every method's merged file is plain open_clip weights (strict key matching).
    open_clip.create_model(TINY, pretrained=str(tmp_path / "run" / "merged.safetensors"))


def test_train_radapter_outputs_ema_adapter_and_merged_model(bench, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(bench, run, batch_size=6, max_steps=3, ema_momentum=0.9))

    tensors, metadata = load_adapter(run / "adapter")
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    for name, tensor in tensors.items():
        torch.testing.assert_close(tensor, checkpoint["ema"]["shadow"][name])
    live = checkpoint["trainable"]["model.visual.transformer.resblocks.0.ls_1.weight"]
    assert not torch.equal(tensors["visual.transformer.resblocks.0.ls_1.weight"], live)
    assert metadata.task == "classification"
    assert metadata.labels == ["animal-mammal", "food-fruit", "travel-car"]
    assert metadata.templates
    assert metadata.training["steps"] == 3
    assert metadata.config.alpha == 0.5

    # The merged file is plain open_clip weights equal to the adapted model at alpha 0.5.
    merged = open_clip.create_model(TINY, pretrained=str(run / "merged.safetensors")).eval()
    adapted, _ = load_run_system(run).at_alpha(0.5)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged.encode_image(images), adapted.encode_image(images))


def test_lora_merge_matches_parametrized_model():
    model = make_tiny_model()
    inject_lora(model, rank=2, lora_alpha=4.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".up"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    merged = open_clip.create_model(TINY).eval()
    merged.load_state_dict(merged_lora_state_dict(model), strict=True)
    images = torch.randn(2, 3, 32, 32, generator=generator)
    texts = open_clip.get_tokenizer(TINY)(["a fox", "a red car"])

    with torch.no_grad():
        torch.testing.assert_close(merged.encode_image(images), model.encode_image(images))
        torch.testing.assert_close(merged.encode_text(texts), model.encode_text(texts))
        assert not torch.allclose(merged.encode_image(images), make_tiny_model().encode_image(images))


def test_train_resume_reproduces_next_step(bench, tmp_path):
    # Adapter Dropping stays on, so the restored RNG state matters; step 3 lies mid-epoch.
    straight = tmp_path / "straight"
    train(tiny_config(bench, straight, batch_size=6, max_steps=3))
    resumed = tmp_path / "resumed"
    train(tiny_config(bench, resumed, batch_size=6, max_steps=2))
    train(tiny_config(bench, resumed, batch_size=6, max_steps=3))

    assert logged_losses(resumed)[3] == logged_losses(straight)[3]
    expected = load_file(str(straight / "adapter" / "adapter.safetensors"))
    actual = load_file(str(resumed / "adapter" / "adapter.safetensors"))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


def test_train_loader_workers_match_main_process(bench, tmp_path):
    # Augmentations are seeded per sample, so worker processes must produce the same batches.
    main_process = tmp_path / "main"
    train(tiny_config(bench, main_process, batch_size=6, max_steps=3))
    workers = tmp_path / "workers"
    train(tiny_config(bench, workers, batch_size=6, max_steps=3, num_workers=2))

    assert logged_losses(workers) == logged_losses(main_process)


def test_train_resume_keeps_whole_run_timing(bench, tmp_path):
    first = train(tiny_config(bench, tmp_path, batch_size=6, max_steps=2))
    (tmp_path / "summary.json").unlink()  # as if stopped while writing the outputs

    again = train(tiny_config(bench, tmp_path, batch_size=6, max_steps=2))

    assert again["mean_step_time_s"] == first["mean_step_time_s"]
    assert again["wall_time_s"] > first["wall_time_s"]


def test_train_resume_rejects_changed_settings(bench, tmp_path):
    train(tiny_config(bench, tmp_path, batch_size=6, max_steps=1))
    with pytest.raises(ValueError, match=r"lr: 0.002 -> 0.01"):
        train(tiny_config(bench, tmp_path, batch_size=6, max_steps=2, lr=1e-2))


def test_train_few_shot_low_rank(bench, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(bench, run, shots=2, batch_size=6, max_steps=1))

    _, metadata = load_adapter(run / "adapter")
    assert metadata.config.vision_rank == 4
    assert metadata.config.text_rank == 4
    assert json.loads((run / "config.json").read_text())["shots"] == 2


def test_few_shot_indices_k_per_class_seeded():
    labels = ["a"] * 5 + ["b"] * 3 + ["c"] * 1

    chosen = few_shot_indices(labels, shots=2, seed=0)

    assert [labels[index] for index in chosen] == ["a", "a", "b", "b", "c"]  # "c" has only one image
    assert len(set(chosen)) == len(chosen)
    assert few_shot_indices(labels, shots=2, seed=0) == chosen
    draws = {tuple(few_shot_indices(labels, shots=2, seed=seed)) for seed in range(10)}
    assert len(draws) > 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_train_two_gloo_processes_match_single_process(bench, tmp_path):
    flags = [
        "train", "--arch", TINY, "--pretrained", str(bench["weights"]), "--data", str(bench["data"]),
        "--batch-size", "6", "--max-steps", "2", "--warmup-steps", "0", "--lr", "2e-3",
        "--drop-prob", "0", "--precision", "fp32", "--log-every", "1",
    ]  # fmt: skip
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        f"import sys\nsys.path[:0] = [{str(REPOSITORY)!r}, {str(REPOSITORY / 'tests')!r}]\n"
        "import helpers  # registers the tiny architectures\n"
        "from training.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(launcher), *flags, "--output", str(tmp_path / "two"),
    ]  # fmt: skip
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""}
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert main([*flags, "--output", str(tmp_path / "one")]) == 0

    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2
    one, two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    for step in (1, 2):
        assert two[step] == pytest.approx(one[step], rel=1e-5)
    expected = load_file(str(tmp_path / "one" / "adapter" / "adapter.safetensors"))
    actual = load_file(str(tmp_path / "two" / "adapter" / "adapter.safetensors"))
    for name in expected:
        # Summation order differs between one process and an all-reduce over two.
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--drop-prob", "1.5"], r"drop_prob=1.5 is invalid; it must lie in \[0.0, 1.0\)"),
        (["--method", "adapterx"], r"method='adapterx' is invalid; choose one of r-adapter"),
        (["--method", "linear-probe", "--task", "retrieval"], r"linear-probe.*needs task='classification'"),
        (["--recipe", "nope"], r"unknown recipe 'nope'; built-in recipes are"),
        (["--batch-size", "100"], r"batch_size=100 exceeds the 18 training samples"),
    ],
)
def test_train_cli_rejects_bad_input(bench, tmp_path, capsys, flags, message):
    argv = ["train", "--arch", TINY, "--pretrained", str(bench["weights"]), "--data", str(bench["data"])]

    assert main([*argv, "--output", str(tmp_path), *flags]) == 2

    assert re.search(message, capsys.readouterr().err)


def test_recipe_defaults_follow_radapter_paper():
    config = TrainConfig.from_dict(load_recipe("classification"))
    assert (config.lr, config.weight_decay, config.epochs, config.batch_size) == (5e-4, 0.0, 10, 512)
    assert (config.warmup_steps, config.grad_clip, config.temperature) == (500, 1.0, 0.01)
    assert (config.drop_prob, config.ema_momentum, config.margin, config.label_smoothing) == (
        0.2,
        0.999,
        0.05,
        0.02,
    )
    assert config.alpha == 0.5
    assert TrainConfig.from_dict(load_recipe("retrieval")).alpha == 0.8
    assert TrainConfig.from_dict(load_recipe("retrieval")).label_smoothing == 0.0


def test_config_flags_override_recipe(tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text('lr = 1e-3\nalpha = 0.7\nvision_rank = "none"\n')
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)

    config = config_from_args(
        parser.parse_args(["--recipe", str(recipe), "--alpha", "0.3", "--text-rank", "2"])
    )

    assert (config.lr, config.alpha, config.vision_rank, config.text_rank) == (1e-3, 0.3, None, 2)


def test_config_recipe_rejects_wrong_type(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('epochs = "ten"\n')
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)

    with pytest.raises(ValueError, match=r"epochs='ten' in recipe .* has type str; expected int"):
        config_from_args(parser.parse_args(["--recipe", str(recipe)]))


@pytest.mark.slow
def test_train_radapter_smoke_random_vit_b16(bench, tmp_path):
    # Random-init ViT-B-16 (pretrained=None), so no code path depends on the tiny architecture.
    run = tmp_path / "run"
    config = TrainConfig(
        arch="ViT-B-16", data=str(bench["data"]), output=str(run), batch_size=3, max_steps=1, precision="fp32"
    )

    summary = train(config)

    # Two full-rank adapters per block, 12 blocks per tower: 20,447,232 weights plus 48 scales.
    assert summary["trainable_parameters"] == 24 * 768**2 + 24 * 512**2 + 48
    merged = open_clip.create_model("ViT-B-16", pretrained=str(run / "merged.safetensors"))
    assert merged.visual.transformer.resblocks[0].attn.out_proj.weight.shape == (768, 768)


def test_train_cli_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr("training.train.train", interrupted)

    assert main(["train", "--arch", TINY, "--max-steps", "1"]) == 130

    error = capsys.readouterr().err
    assert "radapter train: interrupted; rerun the same command to resume" in error
    assert "Traceback" not in error
