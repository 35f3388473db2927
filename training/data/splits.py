"""Class selection, the split rules and the no-leak invariant of the emoji renditions benchmark.

Every decision here is a function of emoji keys (through SHA-1) and of which renditions exist, so
the same packages give the same splits on every machine.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .catalog import Concept, skin_tone_name
from .keys import is_test_concept, is_val_concept, seed_for

CORE_STYLES = (
    "noto",
    "twemoji",
    "openmoji-color",
    "openmoji-black",
    "fluent-flat",
    "fluent-3d",
    "fluent-high-contrast",
)
PRETRAIN_STYLES = ("noto", "twemoji", "openmoji-color", "fluent-flat", "noto-v1", "emojione")
ID_STYLE = "noto"
# OOD styles seen in pretraining come first, then those the backbone never saw.
OOD_STYLES = (
    "twemoji",
    "openmoji-color",
    "fluent-flat",
    "fluent-3d",
    "openmoji-black",
    "fluent-high-contrast",
)
MIN_CLASS_CONCEPTS = 12
MIN_CAPTIONS = 3
MAX_CAPTIONS = 5
# Splits used for training or model selection: no image of a test concept may appear in them.
TRAINING_SPLITS = ("pretrain", "id-train", "id-val", "retrieval-train", "segmentation-train")

Usable = Callable[[str, str], bool]
"""(style, key) -> whether that rendition exists (and, for some callers, passed the filter)."""


class LeakError(RuntimeError):
    """Raised when a test concept appears in a training or model-selection split."""


@dataclass(frozen=True)
class ClassSelection:
    """Classes (emoji-datasource subcategories) and the concepts that carry each label."""

    classes: tuple[str, ...]
    concepts: Mapping[str, tuple[str, ...]]

    def label_of(self) -> dict[str, str]:
        """Return concept key -> class name for every selected concept."""
        return {key: label for label, keys in self.concepts.items() for key in keys}


def image_path(style: str, key: str) -> str:
    """Return the manifest path of a rendition, relative to the output folder."""
    return f"images/{style}/{key}.png"


def select_classes(
    concepts: Iterable[Concept], present: Usable, core_styles: Sequence[str], min_concepts: int
) -> ClassSelection:
    """Keep subcategories with at least `min_concepts` concepts present in every core style.

    Presence means the style's package has a drawing for the key, before the foreground filter:
    with emoji-datasource 16.0.0 and the pinned styles this keeps 52 classes over 1,288 concepts.
    Images dropped later by the filter leave a concept out of that one split only.
    """
    complete: dict[str, list[str]] = defaultdict(list)
    for concept in concepts:
        if all(present(style, concept.key) for style in core_styles):
            complete[concept.subcategory].append(concept.key)
    classes = {label: tuple(sorted(keys)) for label, keys in complete.items() if len(keys) >= min_concepts}
    return ClassSelection(classes=tuple(sorted(classes)), concepts=classes)


def classification_splits(
    selection: ClassSelection, usable: Usable, styles: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Return id-train, id-val, id-test and one ood-<style> split per OOD style in `styles`."""
    splits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for label, keys in selection.concepts.items():
        for key in keys:
            if not is_test_concept(key):
                if ID_STYLE in styles and usable(ID_STYLE, key):
                    split = "id-val" if is_val_concept(key) else "id-train"
                    splits[split].append(_classification_row(ID_STYLE, key, label))
                continue
            for style in (ID_STYLE, *OOD_STYLES):
                if style in styles and usable(style, key):
                    split = "id-test" if style == ID_STYLE else f"ood-{style}"
                    splits[split].append(_classification_row(style, key, label))
    return dict(splits)


def _classification_row(style: str, key: str, label: str) -> dict[str, Any]:
    return {"image": image_path(style, key), "label": label, "key": key, "concept": key, "style": style}


def pretrain_split(
    concepts: Iterable[Concept], usable: Usable, styles: Sequence[str]
) -> list[dict[str, Any]]:
    """Return image-caption rows for every non-test concept and its skin tone variants.

    Each row carries 3 to 5 captions, chosen with a seed derived from style and key.
    """
    rows = []
    for concept in concepts:
        if is_test_concept(concept.key):
            continue
        for style in PRETRAIN_STYLES:
            if style not in styles:
                continue
            for key in (concept.key, *concept.variants):
                if usable(style, key):
                    rows.append(
                        {
                            "image": image_path(style, key),
                            "captions": pretrain_captions(concept, key, style),
                            "image_id": f"{style}/{key}",
                            "key": key,
                            "concept": concept.key,
                            "style": style,
                        }
                    )
    return rows


def pretrain_captions(concept: Concept, key: str, style: str) -> list[str]:
    """Return 3 to 5 captions for one rendition from its names, OpenMoji tags and subcategory."""
    tone = skin_tone_name(key)
    name = f"{concept.name}: {tone}" if tone else concept.name
    group = concept.subcategory.replace("-", " ")
    candidates = [f"an emoji of {name}", f"{name}, an emoji from the {group} group"]
    candidates += [f"{short_name} emoji" for short_name in concept.short_names if short_name != concept.name]
    tags = list(dict.fromkeys(concept.tags))
    if tags:
        candidates.append(", ".join(tags[:6]))
    candidates.append(f"a {group} emoji")
    candidates = [text for text in dict.fromkeys(candidates) if text != name]
    rng = random.Random(seed_for("captions", style, key))
    count = rng.randint(MIN_CAPTIONS, MAX_CAPTIONS)
    extra = rng.sample(candidates, min(count - 1, len(candidates)))
    return [name, *extra]


def retrieval_splits(
    concepts: Iterable[Concept], usable: Usable, styles: Sequence[str], core_styles: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Return retrieval-train (non-test concepts, noto) and retrieval-test-<style> per evaluated style.

    The caption is the CLDR name. Test concepts must pass the foreground filter in every core
    style, so each style's gallery contains the same concepts and recall is comparable across styles.
    """
    splits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for concept in concepts:
        if not is_test_concept(concept.key):
            if ID_STYLE in styles and usable(ID_STYLE, concept.key):
                splits["retrieval-train"].append(_retrieval_row(ID_STYLE, concept))
            continue
        if not all(usable(style, concept.key) for style in core_styles):
            continue
        for style in (ID_STYLE, *OOD_STYLES):
            if style in styles:
                splits[f"retrieval-test-{style}"].append(_retrieval_row(style, concept))
    return dict(splits)


def _retrieval_row(style: str, concept: Concept) -> dict[str, Any]:
    return {
        "image": image_path(style, concept.key),
        "caption": concept.name,
        "image_id": concept.key,
        "key": concept.key,
        "concept": concept.key,
        "style": style,
    }


def check_no_leak(splits: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Verify that no training or model-selection split contains a test concept, and id-val is disjoint.

    Raises:
        LeakError: With the split, the offending keys (up to five) and their count.
    """
    for split in TRAINING_SPLITS:
        leaked = sorted(
            {
                concept
                for row in splits.get(split, ())
                for concept in _row_concepts(row)
                if is_test_concept(concept)
            }
        )
        if leaked:
            raise LeakError(
                f"split {split!r} contains {len(leaked)} test concepts, e.g. {leaked[:5]}; "
                "this is a bug in the split rules."
            )
    train = {row["concept"] for row in splits.get("id-train", ())}
    shared = sorted(train & {row["concept"] for row in splits.get("id-val", ())})
    if shared:
        raise LeakError(
            f"id-train and id-val share {len(shared)} concepts, e.g. {shared[:5]}; "
            "this is a bug in the split rules."
        )


def _row_concepts(row: Mapping[str, Any]) -> list[str]:
    concepts = row.get("concepts")
    return list(concepts) if concepts else [row["concept"]]
