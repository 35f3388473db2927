"""Zero-shot helpers: recall@k on hand-built embeddings, classifier heads and top-1 on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from helpers import TINY, make_tiny_model
from PIL import Image

from training.zero_shot import build_classifier, classification_accuracy, recall_at_k, retrieval_recall


def test_recall_at_k_both_directions() -> None:
    images = torch.eye(3)
    # Texts 0 and 1 describe image 0 and text 3 image 2. Text 2 describes image 1 but lies
    # closer to image 2, so it misses at rank 1 from the text side, yet it is still image 1's
    # best text, so image 1 hits at rank 1 from the image side.
    text_2 = torch.nn.functional.normalize(torch.tensor([0.0, 0.3, 0.9]), dim=0)
    texts = torch.stack([torch.eye(3)[0], torch.eye(3)[0], text_2, torch.eye(3)[2]])
    owners = torch.tensor([0, 0, 1, 2])
    recall = recall_at_k(images, texts, owners, ks=(1, 2))
    assert recall["text_to_image_R@1"] == pytest.approx(3 / 4)
    assert recall["text_to_image_R@2"] == pytest.approx(1.0)
    assert recall["image_to_text_R@1"] == pytest.approx(1.0)
    assert recall["image_to_text_R@2"] == pytest.approx(1.0)


def test_build_classifier_unit_rows() -> None:
    model = make_tiny_model()
    tokenizer = open_clip.get_tokenizer(TINY)
    head = build_classifier(model, tokenizer, ["cat", "dog", "fish"], templates=("a {}.", "an icon of {}."))
    assert head.shape == (3, 16)
    torch.testing.assert_close(head.norm(dim=1), torch.ones(3))


def test_build_classifier_rejects_template_without_slot() -> None:
    model = make_tiny_model()
    with pytest.raises(ValueError, match="must be non-empty and each contain"):
        build_classifier(model, open_clip.get_tokenizer(TINY), ["cat"], templates=("a photo",))


def _write_images(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for index, row in enumerate(rows):
        Image.new("RGB", (32, 32), (index * 40 % 256, 90, 200)).save(root / row["image"])
    manifest = root / "set.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return manifest


def test_classification_accuracy_matches_head(tmp_path: Path) -> None:
    model = make_tiny_model()
    tokenizer = open_clip.get_tokenizer(TINY)
    _, _, preprocess = open_clip.create_model_and_transforms(TINY)
    rows = [{"image": f"{index}.png", "label": ["cat", "dog"][index % 2]} for index in range(6)]
    manifest = _write_images(tmp_path, rows)
    head = build_classifier(model, tokenizer, ["cat", "dog"])

    accuracy = classification_accuracy(model, tokenizer, preprocess, manifest, ["cat", "dog"], head)

    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(tmp_path / row["image"]).convert("RGB")) for row in rows])
        predictions = (model.encode_image(pixels) @ head.T).argmax(dim=1)
    expected = float((predictions == torch.tensor([0, 1] * 3)).float().mean())
    assert accuracy == pytest.approx(expected)


def test_retrieval_recall_keys(tmp_path: Path) -> None:
    model = make_tiny_model()
    _, _, preprocess = open_clip.create_model_and_transforms(TINY)
    rows = [{"image": f"{index}.png", "caption": f"picture number {index}"} for index in range(5)]
    manifest = _write_images(tmp_path, rows)
    recall = retrieval_recall(model, open_clip.get_tokenizer(TINY), preprocess, manifest, ks=(1, 5))
    assert set(recall) == {"image_to_text_R@1", "text_to_image_R@1", "image_to_text_R@5", "text_to_image_R@5"}
    # With five images and five texts, every match is within the top 5.
    assert recall["image_to_text_R@5"] == 1.0
    assert recall["text_to_image_R@5"] == 1.0
