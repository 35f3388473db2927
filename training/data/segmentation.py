"""Segmentation composites: emoji pasted onto crops of real photographs, with class-index masks."""

from __future__ import annotations

import importlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .keys import is_test_concept, seed_for
from .render import ALPHA_THRESHOLD
from .splits import ClassSelection, Usable

logger = logging.getLogger(__name__)

CROP_SIZE = 128  # pixels per side of a composite
MIN_EMOJI_SIZE = 40  # pixels per side of a pasted emoji
MAX_EMOJI_SIZE = 96
SECOND_EMOJI_PROBABILITY = 0.5
ID_STYLES = ("noto", "twemoji", "openmoji-color")
OOD_STYLES = ("fluent-3d", "fluent-flat")


@dataclass(frozen=True)
class Photo:
    """A photograph shipped inside a Python package, and whether it backs train or test composites."""

    name: str
    package: str
    module: str
    file: str
    split: str


# Train and test composites use disjoint photographs, so test backgrounds are unseen in training.
PHOTOS = tuple(
    Photo(Path(file).stem, package, module, file, split)
    for package, module, file, split in (
        ("scikit-image", "skimage.data", "astronaut.png", "train"),
        ("scikit-image", "skimage.data", "brick.png", "train"),
        ("scikit-image", "skimage.data", "camera.png", "train"),
        ("scikit-image", "skimage.data", "cell.png", "train"),
        ("scikit-image", "skimage.data", "chelsea.png", "train"),
        ("scikit-image", "skimage.data", "coffee.png", "train"),
        ("scikit-image", "skimage.data", "coins.png", "train"),
        ("scikit-image", "skimage.data", "grass.png", "train"),
        ("scikit-image", "skimage.data", "gravel.png", "train"),
        ("scikit-image", "skimage.data", "hubble_deep_field.jpg", "train"),
        ("scikit-image", "skimage.data", "moon.png", "train"),
        ("scikit-image", "skimage.data", "motorcycle_left.png", "train"),
        ("scikit-image", "skimage.data", "rocket.jpg", "train"),
        ("scikit-learn", "sklearn.datasets.images", "china.jpg", "train"),
        ("scikit-image", "skimage.data", "clock_motion.png", "test"),
        ("scikit-image", "skimage.data", "ihc.png", "test"),
        ("scikit-image", "skimage.data", "microaneurysms.png", "test"),
        ("scikit-image", "skimage.data", "page.png", "test"),
        ("scikit-image", "skimage.data", "retina.jpg", "test"),
        ("scikit-image", "skimage.data", "text.png", "test"),
        ("scikit-learn", "sklearn.datasets.images", "flower.jpg", "test"),
        ("matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "test"),
    )
)


def photo_names(split: str) -> list[str]:
    """Return the sorted names of the photographs of `split` ("train" or "test")."""
    return sorted(photo.name for photo in PHOTOS if photo.split == split)


def load_photos() -> dict[str, Image.Image]:
    """Return name -> RGB image for every background photograph.

    Raises:
        FileNotFoundError: A package that ships the photographs is missing or lacks the file.
    """
    photos = {}
    for photo in PHOTOS:
        with Image.open(_photo_path(photo)) as image:
            photos[photo.name] = image.convert("RGB")
    return photos


def _photo_path(photo: Photo) -> Path:
    try:
        module = importlib.import_module(photo.module)
    except ImportError as error:
        raise FileNotFoundError(
            f"background photo {photo.file} comes from {photo.package}, which is not installed; "
            f"run `pip install {photo.package}`."
        ) from error
    path = Path(module.__file__).parent / photo.file  # type: ignore[arg-type]
    if not path.is_file():
        raise FileNotFoundError(f"background photo {path} is missing from {photo.package}; reinstall it.")
    return path


def plan_composites(
    selection: ClassSelection, usable: Usable, styles: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Return the rows of segmentation-train, segmentation-test-id and segmentation-test-ood.

    One composite per (concept, style); a second emoji of the same split and style joins it with
    probability 0.5. The photograph is chosen here; crop, sizes and positions are drawn in
    `compose` from a seed derived from the image path.
    """
    label_of = selection.label_of()
    plans = (
        ("segmentation-train", "train", ID_STYLES, False),
        ("segmentation-test-id", "test", ID_STYLES, True),
        ("segmentation-test-ood", "test", OOD_STYLES, True),
    )
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, photo_split, split_styles, test in plans:
        rows = []
        for style in (style for style in split_styles if style in styles):
            pool = sorted(key for key in label_of if is_test_concept(key) == test and usable(style, key))
            for key in pool:
                rng = random.Random(seed_for("segmentation", split, style, key))
                keys = [key]
                if rng.random() < SECOND_EMOJI_PROBABILITY and len(pool) > 1:
                    keys.append(rng.choice([other for other in pool if other != key]))
                photo = rng.choice(photo_names(photo_split))
                stem = f"segmentation/{split.removeprefix('segmentation-')}/{style}/{key}"
                rows.append(
                    {
                        "image": f"{stem}.png",
                        "mask": f"{stem}.mask.png",
                        "labels": [label_of[pasted] for pasted in keys],
                        "concepts": keys,
                        "key": key,
                        "concept": key,
                        "style": style,
                        "photo": photo,
                    }
                )
        if rows:
            splits[split] = rows
    return splits


def compose(
    row: Mapping[str, Any],
    photos: Mapping[str, Image.Image],
    load_emoji: Callable[[str, str], Image.Image],
    class_index: Mapping[str, int],
) -> tuple[Image.Image, Image.Image]:
    """Paste the row's emoji onto a random crop of the row's photograph.

    Returns:
        The RGB composite and its mask (mode L: 0 = background, i + 1 = class i). Where a later
        emoji covers an earlier one, the mask takes the later emoji's class.
    """
    rng = random.Random(seed_for("composite", row["image"]))
    canvas = _random_crop(photos[row["photo"]], rng).convert("RGBA")
    mask = np.zeros((CROP_SIZE, CROP_SIZE), dtype=np.uint8)
    for key, label in zip(row["concepts"], row["labels"], strict=True):
        size = rng.randint(MIN_EMOJI_SIZE, MAX_EMOJI_SIZE)
        emoji = load_emoji(row["style"], key).resize((size, size), Image.Resampling.LANCZOS)
        left = rng.randint(0, CROP_SIZE - size)
        top = rng.randint(0, CROP_SIZE - size)
        canvas.alpha_composite(emoji, (left, top))
        foreground = np.asarray(emoji.getchannel("A")) > ALPHA_THRESHOLD
        mask[top : top + size, left : left + size][foreground] = class_index[label] + 1
    return canvas.convert("RGB"), Image.fromarray(mask, mode="L")


def _random_crop(photo: Image.Image, rng: random.Random) -> Image.Image:
    # Rescale so the short side lies between one and two crop sizes: crops show objects at a
    # range of scales instead of only tiny texture patches of a large photograph.
    short_side = rng.randint(CROP_SIZE, 2 * CROP_SIZE)
    scale = short_side / min(photo.size)
    resized = photo.resize(
        (max(CROP_SIZE, round(photo.width * scale)), max(CROP_SIZE, round(photo.height * scale)))
    )
    left = rng.randint(0, resized.width - CROP_SIZE)
    top = rng.randint(0, resized.height - CROP_SIZE)
    return resized.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))
