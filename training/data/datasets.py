"""PyTorch data sets over manifests for classification, retrieval and segmentation.

Each takes the image transform that open_clip returns (`open_clip.create_model_and_transforms`),
so images reach the model exactly as in zero-shot evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .manifest import ManifestRecord, load_manifest

Transform = Callable[[Image.Image], torch.Tensor]
Tokenizer = Callable[[str], torch.Tensor]

# Prompt templates for zero-shot classification heads; `{}` takes the class name.
PROMPT_TEMPLATES = (
    "an emoji of {}.",
    "a {} emoji.",
    "an icon of {}.",
    "a drawing of {}.",
    "a cartoon of {}.",
    "a 3d render of {}.",
    "a black and white drawing of {}.",
)


def load_classes(path: str | Path) -> list[str]:
    """Read the ordered class list (`classes.json`, a JSON list of names) that a build writes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"class list {path} not found; it sits beside the manifests `radapter data build` writes."
        )
    classes = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise ValueError(f"class list {path} must be a JSON list of strings.")
    return classes


def class_display_name(label: str) -> str:
    """Turn a subcategory label such as `animal-mammal` into prompt text (`animal mammal`)."""
    return label.replace("-", " ").replace("&", "and")


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB; transparent pixels are composited onto white, as the build does."""
    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


def _records(manifest: str | Path | Sequence[ManifestRecord]) -> list[ManifestRecord]:
    if isinstance(manifest, (str, Path)):
        return load_manifest(manifest)
    return list(manifest)


class ClassificationDataset(Dataset):
    """(image tensor, class index) pairs from a manifest with `image` and `label` columns.

    Args:
        manifest: Path of a manifest, or records already loaded.
        transform: Image preprocessing, e.g. open_clip's validation transform.
        classes: Ordered class names. Defaults to the sorted labels of the manifest; pass the
            training class list when evaluating another manifest so indices agree.
    """

    templates = PROMPT_TEMPLATES

    def __init__(
        self,
        manifest: str | Path | Sequence[ManifestRecord],
        transform: Transform,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.records = _records(manifest)
        self.transform = transform
        missing = [index for index, record in enumerate(self.records) if record.label is None]
        if missing:
            raise ValueError(
                f"{len(missing)} manifest rows have no `label` (first: row {missing[0] + 1}); "
                "classification needs one per row."
            )
        labels = sorted({record.label for record in self.records if record.label is not None})
        self.classes = list(classes) if classes is not None else labels
        self.class_to_index = {name: index for index, name in enumerate(self.classes)}
        unknown = sorted(set(labels) - set(self.class_to_index))
        if unknown:
            raise ValueError(
                f"labels {unknown[:5]} are not among the {len(self.classes)} classes; "
                "pass the class list the model was trained with."
            )

    @property
    def class_names(self) -> list[str]:
        """Class names as they appear in prompts."""
        return [class_display_name(name) for name in self.classes]

    def prompts(self) -> list[list[str]]:
        """Return, per class, the prompt templates filled with its name."""
        return [[template.format(name) for template in self.templates] for name in self.class_names]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        return self.transform(load_rgb(record.image)), self.class_to_index[record.label]  # type: ignore[index]


class RetrievalDataset(Dataset):
    """(image tensor, caption, image index) triples, one per caption of each row.

    A row with several captions (pretraining) becomes several pairs that share an image index,
    and so do rows with equal `image_id`. Pairs with equal image index are positives of each other:
    `positives = image_index[:, None] == image_index[None, :]` for a batch.

    Args:
        manifest: Path of a manifest with `caption` or `captions`, or records already loaded.
        transform: Image preprocessing.
        tokenizer: Optional; when given, captions are returned as its token tensor (first row).
    """

    def __init__(
        self,
        manifest: str | Path | Sequence[ManifestRecord],
        transform: Transform,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.records = _records(manifest)
        self.transform = transform
        self.tokenizer = tokenizer
        image_ids = sorted({record.image_id for record in self.records})
        self.image_index = {image_id: index for index, image_id in enumerate(image_ids)}
        self.pairs = [(record, caption) for record in self.records for caption in record.captions]
        if len(self.pairs) == 0 and self.records:
            raise ValueError(
                "the manifest has no `caption` or `captions` column; retrieval needs text per row."
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any, int]:
        record, caption = self.pairs[index]
        text: Any = caption if self.tokenizer is None else self.tokenizer(caption)[0]
        return self.transform(load_rgb(record.image)), text, self.image_index[record.image_id]


class SegmentationDataset(Dataset):
    """(image tensor, mask) pairs; the mask is a (H, W) int64 tensor of class indices plus one.

    The mask is resized with nearest neighbour to the transformed image's height and width. This
    keeps it aligned only for transforms that resize a square image, such as open_clip's
    validation transform on the 128 px composites. Random crops or flips would misalign it.

    Args:
        manifest: Path of a manifest with `image` and `mask` columns, or records already loaded.
        transform: Image preprocessing.
        classes: Ordered class names; mask value i + 1 is class i and 0 is background.
    """

    def __init__(
        self, manifest: str | Path | Sequence[ManifestRecord], transform: Transform, classes: Sequence[str]
    ) -> None:
        self.records = _records(manifest)
        self.transform = transform
        self.classes = list(classes)
        missing = [index for index, record in enumerate(self.records) if record.mask is None]
        if missing:
            raise ValueError(
                f"{len(missing)} manifest rows have no `mask` (first: row {missing[0] + 1}); "
                "segmentation needs one per row."
            )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.records[index]
        image = self.transform(load_rgb(record.image))
        height, width = image.shape[-2:]
        with Image.open(record.mask) as mask_image:  # type: ignore[arg-type]
            mask = mask_image.convert("L").resize((width, height), Image.Resampling.NEAREST)
        values = torch.from_numpy(np.asarray(mask, dtype=np.int64).copy())
        if int(values.max()) > len(self.classes):
            raise ValueError(
                f"mask {record.mask} contains value {int(values.max())}, "
                f"above the {len(self.classes)} classes; "
                "pass the class list the masks were made with."
            )
        return image, values
