"""A tiny benchmark folder, base weights and a thread limit for fine-tuning, evaluation and comparison tests.

This module contains no tests; the train, evaluate and compare tests import it by path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, make_tiny_model, save_weights
from PIL import Image


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run a test module with one intra-op thread: tiny models gain nothing from more, and on a
    shared machine extra threads contend for cores and slow the tests several times over."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


CLASSES = ["animal-mammal", "food-fruit", "travel-car"]
# One base colour per class; OOD styles shift it so the task stays learnable but shifted.
COLOURS = {"animal-mammal": (200, 40, 40), "food-fruit": (40, 200, 40), "travel-car": (40, 40, 200)}
CAPTIONS = {
    "animal-mammal": ["a red fox", "a brown bear"],
    "food-fruit": ["a green apple", "a ripe pear"],
    "travel-car": ["a blue car", "a racing car"],
}


def _image(path: Path, colour: tuple[int, int, int], seed: int, style: int) -> str:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 30, (32, 32, 3)), 0, 255)
    if style == 1:
        pixels = 255 - pixels * 0.5  # washed-out rendition
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path.name


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_tiny_benchmark(root: Path, per_class: int = 6) -> Path:
    """Write classes.json and classification, retrieval and segmentation manifests under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    seed = 0
    splits = {"id-train": (per_class, 0), "id-val": (2, 0), "id-test": (3, 0), "ood-washed": (3, 1)}
    for split, (count, style) in splits.items():
        rows = []
        for label in CLASSES:
            for index in range(count):
                seed += 1
                name = _image(root / f"{split}-{label}-{index}.png", COLOURS[label], seed, style)
                rows.append({"image": name, "label": label})
        _write(root / f"{split}.jsonl", rows)
    retrieval = {"retrieval-train": (4, 0), "retrieval-test-noto": (2, 0), "retrieval-test-twemoji": (2, 1)}
    for split, (count, style) in retrieval.items():
        rows = []
        for label in CLASSES:
            for index in range(count):
                seed += 1
                name = _image(root / f"{split}-{label}-{index}.png", COLOURS[label], seed, style)
                rows.append(
                    {"image": name, "captions": [f"{caption} {index}" for caption in CAPTIONS[label]]}
                )
        _write(root / f"{split}.jsonl", rows)
    write_segmentation(root)
    return root


def write_segmentation(root: Path) -> None:
    """Write segmentation-train / -test-id / -test-ood: one class square on a noisy grey background."""
    rng = np.random.default_rng(7)
    splits = {"segmentation-train": (4, 0), "segmentation-test-id": (2, 0), "segmentation-test-ood": (2, 1)}
    for split, (count, style) in splits.items():
        rows = []
        for class_index, label in enumerate(CLASSES):
            for index in range(count):
                pixels = np.clip(128 + rng.normal(0, 20, (32, 32, 3)), 0, 255)
                mask = np.zeros((32, 32), dtype=np.uint8)
                top, left = rng.integers(0, 16, size=2)
                pixels[top : top + 16, left : left + 16] = COLOURS[label]
                mask[top : top + 16, left : left + 16] = class_index + 1
                if style == 1:
                    pixels = 255 - pixels * 0.5
                name = f"{split}-{label}-{index}"
                Image.fromarray(pixels.astype(np.uint8)).save(root / f"{name}.png")
                Image.fromarray(mask, mode="L").save(root / f"{name}-mask.png")
                rows.append({"image": f"{name}.png", "mask": f"{name}-mask.png", "labels": [label]})
        _write(root / f"{split}.jsonl", rows)


def write_tiny_weights(path: Path) -> Path:
    """Save a seeded random tiny model as the base weights file runs fine-tune."""
    return save_weights(make_tiny_model(TINY, seed=0), path)
