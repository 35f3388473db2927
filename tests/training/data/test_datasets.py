import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from training.data.datasets import (
    ClassificationDataset,
    RetrievalDataset,
    SegmentationDataset,
    load_classes,
)
from training.data.segmentation import CROP_SIZE, compose

CLASSES = ["animal-mammal", "face-smiling"]


def transform():
    return open_clip.image_transform(32, is_train=False)


def write_image(path: Path, color: tuple[int, ...], mode: str = "RGB", size: int = 64) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), color).save(path)
    return str(path.relative_to(path.parents[1]))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_classification_dataset(tmp_path: Path) -> None:
    rows = [
        {"image": write_image(tmp_path / "images/a.png", (255, 0, 0)), "label": "face-smiling"},
        {"image": write_image(tmp_path / "images/b.png", (0, 0, 0, 0), "RGBA"), "label": "animal-mammal"},
    ]
    dataset = ClassificationDataset(write_jsonl(tmp_path / "set.jsonl", rows), transform(), classes=CLASSES)
    image, label = dataset[0]
    assert image.shape == (3, 32, 32)
    assert label == 1
    # A fully transparent image is composited onto white, the brightest normalised value.
    transparent, _ = dataset[1]
    white = transform()(Image.new("RGB", (64, 64), (255, 255, 255)))
    torch.testing.assert_close(transparent, white)
    assert dataset.class_names == ["animal mammal", "face smiling"]
    assert dataset.prompts()[0][0] == "an emoji of animal mammal."


def test_classification_dataset_rejects_unknown_label(tmp_path: Path) -> None:
    rows = [{"image": "a.png", "label": "vehicle"}]
    with pytest.raises(ValueError, match="vehicle"):
        ClassificationDataset(write_jsonl(tmp_path / "set.jsonl", rows), transform(), classes=CLASSES)


def test_retrieval_dataset_multi_positive(tmp_path: Path) -> None:
    image = write_image(tmp_path / "images/a.png", (0, 255, 0))
    other = write_image(tmp_path / "images/b.png", (0, 0, 255))
    rows = [
        {"image": image, "captions": ["a green square", "an emoji of green"], "image_id": "green"},
        {"image": other, "caption": "a blue square"},
    ]
    dataset = RetrievalDataset(
        write_jsonl(tmp_path / "pairs.jsonl", rows), transform(), open_clip.get_tokenizer("RN50")
    )
    assert len(dataset) == 3
    indices = [dataset[index][2] for index in range(3)]
    assert indices[0] == indices[1] != indices[2]
    tokens = dataset[2][1]
    assert tokens.shape == (77,)


def test_segmentation_dataset_resizes_mask(tmp_path: Path) -> None:
    image = write_image(tmp_path / "seg/a.png", (9, 9, 9), size=128)
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[:64, :64] = 2
    Image.fromarray(mask, mode="L").save(tmp_path / "seg/a.mask.png")
    rows = [{"image": image, "mask": "seg/a.mask.png"}]
    dataset = SegmentationDataset(write_jsonl(tmp_path / "seg.jsonl", rows), transform(), CLASSES)
    tensor, target = dataset[0]
    assert tensor.shape == (3, 32, 32)
    assert target.shape == (32, 32)
    assert target.dtype == torch.int64
    assert target[:16, :16].eq(2).all()
    assert target[16:, :].eq(0).all()
    with pytest.raises(ValueError, match="above the 1 classes"):
        SegmentationDataset(tmp_path / "seg.jsonl", transform(), ["animal-mammal"])[0]


def test_compose_mask_matches_alpha() -> None:
    emoji = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    emoji.paste((255, 0, 0, 255), (16, 16, 48, 48))
    row = {
        "image": "segmentation/test/noto/1F601.png",
        "style": "noto",
        "concepts": ["1F601"],
        "labels": ["face-smiling"],
        "photo": "p",
    }
    photos = {"p": Image.new("RGB", (300, 200), (0, 90, 0))}
    image, mask = compose(
        row, photos, lambda style, key: emoji, {label: i for i, label in enumerate(CLASSES)}
    )
    assert image.size == mask.size == (CROP_SIZE, CROP_SIZE)
    values = np.asarray(mask)
    assert set(np.unique(values)) == {0, 2}
    pixels = np.asarray(image)
    # Resampling blends edge pixels, so a masked pixel is more than half emoji red, others less.
    assert (pixels[values == 2][:, 0] >= 128).all()
    assert (pixels[values == 0][:, 0] <= 128).all()
    assert (pixels[values == 0][:, 0] == 0).mean() > 0.5
    again_image, again_mask = compose(
        row, photos, lambda style, key: emoji, {"animal-mammal": 0, "face-smiling": 1}
    )
    assert again_image.tobytes() == image.tobytes()
    assert again_mask.tobytes() == mask.tobytes()


def test_load_classes(tmp_path: Path) -> None:
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    assert load_classes(tmp_path / "classes.json") == CLASSES
    with pytest.raises(FileNotFoundError, match="radapter data build"):
        load_classes(tmp_path / "nope.json")
