"""`radapter evaluate`: hand-computed accuracy and recall, run reloading, alpha sweeps and records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from test_train_fixtures import one_thread, write_tiny_benchmark, write_tiny_weights  # noqa: E402, F401

from training.cli import main  # noqa: E402
from training.evaluate import build_suite, evaluate_model  # noqa: E402
from training.finetune import TrainConfig, train  # noqa: E402
from training.finetune.segmentation import confusion_matrix, mean_iou_from_confusion  # noqa: E402
from training.zero_shot import recall_at_k  # noqa: E402

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


class ColourModel(nn.Module):
    """Embeds an image as its mean RGB and a "token" tensor as itself, so scores are hand-computable."""

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))  # (B, 3)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def colour_tokens(texts: list[str]) -> torch.Tensor:
    basis = {"red": [1.0, 0, 0], "green": [0, 1.0, 0], "blue": [0, 0, 1.0]}
    return torch.tensor([basis[text.split()[-1]] for text in texts])


def write_manifest(root: Path, name: str, rows: list[tuple[tuple[int, int, int], dict]]) -> Path:
    lines = []
    for index, (colour, fields) in enumerate(rows):
        image = f"{name}-{index}.png"
        Image.new("RGB", (4, 4), colour).save(root / image)
        lines.append(json.dumps({"image": image, **fields}))
    path = root / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_evaluate_classification_matches_hand_count(tmp_path):
    # Class i scores channel i, so an image is predicted as its dominant colour.
    write_manifest(
        tmp_path, "id-test", [(RED, {"label": "r"}), (GREEN, {"label": "g"}), (BLUE, {"label": "r"})]
    )
    write_manifest(tmp_path, "ood-a", [(RED, {"label": "g"}), (GREEN, {"label": "g"})])
    extra = write_manifest(
        tmp_path,
        "mine",
        [(BLUE, {"label": "b"}), (BLUE, {"label": "r"}), (RED, {"label": "g"}), (GREEN, {"label": "g"})],
    )
    suite = build_suite("classification", tmp_path, [f"mine={extra}"], classes=["r", "g", "b"])

    metrics = evaluate_model(ColourModel(), None, to_tensor, suite, head=torch.eye(3))

    assert metrics["id-test"] == pytest.approx(2 / 3)
    assert metrics["ood-a"] == pytest.approx(1 / 2)
    assert metrics["extra-mine"] == pytest.approx(2 / 4)
    assert metrics["ood-mean"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert "id-val" not in metrics


def test_evaluate_zero_shot_head_from_text_tower(tmp_path):
    write_manifest(
        tmp_path,
        "id-test",
        [(RED, {"label": "red"}), (GREEN, {"label": "green"}), (BLUE, {"label": "green"})],
    )
    suite = build_suite("classification", tmp_path, classes=["red", "green", "blue"])

    metrics = evaluate_model(ColourModel(), colour_tokens, to_tensor, suite, templates=["a photo of {}"])

    assert metrics["id-test"] == pytest.approx(2 / 3)


def test_recall_at_k_hand_computed():
    images = torch.eye(3)
    # Captions 0 and 1 describe image 0, caption 2 image 1 and caption 3 image 2. Image 2 scores
    # caption 1 (0.9) above its own caption 3 (0.5), and caption 3 scores image 0 (0.6) above image 2.
    texts = torch.tensor([[1.0, 0, 0], [0.2, 0, 0.9], [0, 1.0, 0], [0.6, 0, 0.5]])
    text_to_image = torch.tensor([0, 0, 1, 2])

    metrics = recall_at_k(images, texts, text_to_image, ks=(1, 3))

    assert metrics["image_to_text_R@1"] == pytest.approx(2 / 3)
    assert metrics["image_to_text_R@3"] == pytest.approx(3 / 3)
    assert metrics["text_to_image_R@1"] == pytest.approx(2 / 4)
    assert metrics["text_to_image_R@3"] == pytest.approx(4 / 4)


def test_evaluate_retrieval_id_and_ood(tmp_path):
    write_manifest(
        tmp_path, "retrieval-test-noto", [(RED, {"caption": "red"}), (GREEN, {"caption": "green"})]
    )
    # The pink image is closer to "red" (0.89) than to its own caption "blue" (0.45).
    pink = (255, 0, 128)
    write_manifest(tmp_path, "retrieval-test-other", [(RED, {"caption": "red"}), (pink, {"caption": "blue"})])
    suite = build_suite("retrieval", tmp_path)

    metrics = evaluate_model(ColourModel(), colour_tokens, to_tensor, suite)

    assert metrics["id/image_to_text_R@1"] == 1.0
    assert metrics["id/text_to_image_R@1"] == 1.0
    assert metrics["ood-mean/image_to_text_R@1"] == pytest.approx(1 / 2)
    assert metrics["retrieval-test-other/text_to_image_R@1"] == 1.0


def test_mean_iou_hand_computed():
    masks = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    predictions = torch.tensor([[0, 1, 1, 1], [0, 0, 2, 0]])
    # background: 3 hits, union 5; class 1: 2 hits, union 3; class 2: 1 hit, union 2; class 3 absent.
    confusion = confusion_matrix(masks, predictions, num_classes=4)

    assert confusion.sum() == 8
    assert mean_iou_from_confusion(confusion) == pytest.approx((3 / 5 + 2 / 3 + 1 / 2) / 3)


def test_evaluate_rejects_malformed_extra_ood(tmp_path):
    with pytest.raises(ValueError, match=r"--extra-ood 'mine.jsonl' is invalid; write NAME=PATH"):
        build_suite("classification", None, ["mine.jsonl"])


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    data = write_tiny_benchmark(root / "data")
    weights = write_tiny_weights(root / "base.safetensors")
    common = dict(
        arch=TINY,
        pretrained=str(weights),
        data=str(data),
        batch_size=9,
        max_steps=2,
        warmup_steps=0,
        lr=1e-2,
        precision="fp32",
    )
    for method in ("r-adapter", "full-ft"):
        train(TrainConfig(method=method, output=str(root / method), **common))
    return {"root": root, "data": data, "weights": weights}


def test_evaluate_cli_alpha_sweep_writes_records(trained_runs, tmp_path, capsys):
    root = trained_runs["root"]
    extra = trained_runs["data"] / "ood-washed.jsonl"
    argv = [
        "evaluate", "--data", str(trained_runs["data"]), "--zero-shot", "--run", str(root / "r-adapter"),
        "--run", str(root / "full-ft"), "--alpha-sweep", "--extra-ood", f"again={extra}",
        "--output", str(tmp_path),
    ]  # fmt: skip

    assert main(argv) == 0

    record = json.loads((tmp_path / "results.json").read_text())
    for key in ("command", "git_commit", "seeds", "wall_time_s", "peak_memory_mb"):
        assert key in record
    assert record["seeds"] == {"r-adapter": 0, "full-ft": 0}
    zero_shot = record["results"]["zero-shot"]
    assert set(zero_shot) >= {"id-val", "id-test", "ood-washed", "extra-again", "ood-mean"}
    for name in ("r-adapter", "full-ft"):
        sweep = record["alpha_sweep"][name]
        assert [row["alpha"] for row in sweep] == [round(0.1 * i, 1) for i in range(11)]
        # alpha 0 is the zero-shot model for both re-scaling and WiSE-FT interpolation.
        assert {key: sweep[0][key] for key in zero_shot if key != "alpha"} == {
            k: v for k, v in zero_shot.items() if k != "alpha"
        }
        assert record["results"][name]["best_alpha_on_id_val"] in [row["alpha"] for row in sweep]
    # WiSE-FT at alpha 1 is the fine-tuned model, which `full-ft` reports at its default alpha.
    assert sweep[-1]["id-test"] == record["results"]["full-ft"]["id-test"]
    assert (tmp_path / "alpha_sweep.png").stat().st_size > 0
    assert "| 0.5 |" in (tmp_path / "alpha_sweep.md").read_text()


def test_evaluate_cli_rejects_changed_base_weights(trained_runs, tmp_path, capsys):
    config = json.loads((trained_runs["root"] / "r-adapter" / "config.json").read_text())
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "summary.json"):
        (run / name).write_text((trained_runs["root"] / "r-adapter" / name).read_text())
    summary = json.loads((run / "summary.json").read_text())
    summary["base_weights_sha256"] = "0" * 64
    (run / "summary.json").write_text(json.dumps(summary))

    assert (
        main(["evaluate", "--run", str(run), "--data", config["data"], "--output", str(tmp_path / "out")])
        == 2
    )
    assert "base weights of" in capsys.readouterr().err
