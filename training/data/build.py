"""The build pipeline: fetch, render, split, write images and manifests, report."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from .catalog import Concept, load_concepts
from .files import atomic_write_text
from .manifest import write_manifest
from .notice import notice_text
from .render import RenderCache, on_white, save_png
from .segmentation import compose, load_photos, plan_composites
from .sources import PACKAGES, fetch_package
from .splits import (
    CORE_STYLES,
    MIN_CLASS_CONCEPTS,
    PRETRAIN_STYLES,
    check_no_leak,
    classification_splits,
    pretrain_split,
    retrieval_splits,
    select_classes,
)
from .styles import NAME_SOURCES, STYLES, by_name_index, load_drawings

logger = logging.getLogger(__name__)

ALL_CONCEPTS = 1906  # base emoji in emoji-datasource 16.0.0 outside category Component
CLASSES_NAME = "classes.json"
NOTICE_NAME = "NOTICE"
STATE_NAME = "build-state.json"  # what the files in the output folder were built from


@dataclass(frozen=True)
class BuildOptions:
    """Build settings: folders, styles and subset size."""

    cache_dir: Path
    out_dir: Path
    styles: tuple[str, ...] = tuple(STYLES)
    limit: int | None = None
    min_class_concepts: int | None = None

    def __post_init__(self) -> None:
        unknown = [style for style in self.styles if style not in STYLES]
        if unknown or not self.styles:
            raise ValueError(f"--styles {' '.join(self.styles)} is invalid; choose from: {' '.join(STYLES)}.")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit} is invalid; pass a positive number of concepts.")
        if self.min_class_concepts is not None and self.min_class_concepts < 1:
            raise ValueError(
                f"--min-class-concepts {self.min_class_concepts} is invalid; pass a positive integer."
            )

    @property
    def class_threshold(self) -> int:
        """Concepts a subcategory needs to become a class.

        With `--limit` the default threshold of 12 shrinks in proportion to the subset (never
        below 2), so a quick subset still has classes.
        """
        if self.min_class_concepts is not None:
            return self.min_class_concepts
        if self.limit is None:
            return MIN_CLASS_CONCEPTS
        return max(2, math.ceil(MIN_CLASS_CONCEPTS * min(self.limit, ALL_CONCEPTS) / ALL_CONCEPTS))


@dataclass(frozen=True)
class SplitSummary:
    """Size of one written split."""

    images: int
    classes: int
    concepts: int


@dataclass
class BuildReport:
    """Build result: split sizes, classes, skipped images and the NOTICE text."""

    out_dir: Path
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    unreadable: dict[str, dict[str, str]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    notice: str = ""


def build(options: BuildOptions) -> BuildReport:
    """Build the benchmark described by `options`; files already present are reused, not rewritten.

    Raises:
        NpmNotFoundError, NpmPackError, IntegrityError: Fetching a package failed.
        DiskFullError: A write ran out of space; rerunning after freeing space resumes.
        LeakError: A test concept reached a training split (a bug, never expected).
    """
    start = time.perf_counter()
    packages = _needed_packages(options.styles)
    tarballs = {
        name: fetch_package(PACKAGES[name], options.cache_dir)
        for name in tqdm(packages, desc="fetch", leave=False)
    }
    concepts = load_concepts(tarballs["emoji-datasource"], tarballs["openmoji"])
    if options.limit is not None:
        concepts = sorted(
            sorted(concepts, key=lambda concept: concept.sort_order)[: options.limit],
            key=lambda concept: concept.key,
        )
    caches = _render_styles(options, concepts, tarballs)
    report = BuildReport(out_dir=options.out_dir)

    def usable(style: str, key: str) -> bool:
        return style in caches and caches[style].index.usable(key)

    def present(style: str, key: str) -> bool:
        return style in caches and caches[style].index.present(key)

    core_styles = [style for style in CORE_STYLES if style in options.styles]
    selection = select_classes(concepts, present, core_styles, options.class_threshold)
    splits: dict[str, list[dict[str, Any]]] = {"pretrain": pretrain_split(concepts, usable, options.styles)}
    splits.update(classification_splits(selection, usable, options.styles))
    splits.update(retrieval_splits(concepts, usable, options.styles, core_styles))
    splits.update(plan_composites(selection, usable, options.styles))
    splits = {name: rows for name, rows in splits.items() if rows}
    check_no_leak(splits)

    _remove_stale_outputs(options.out_dir, packages, selection.classes, splits)
    _write_renditions(options.out_dir, splits, caches)
    _write_composites(options.out_dir, splits, caches, selection.classes)
    for name, rows in sorted(splits.items()):
        write_manifest(options.out_dir / f"{name}.jsonl", rows)
        report.splits[name] = _summarize(rows)
    atomic_write_text(options.out_dir / CLASSES_NAME, json.dumps(list(selection.classes), indent=1) + "\n")
    state = {
        "packages": [PACKAGES[name].spec for name in packages],
        "classes": list(selection.classes),
        "splits": sorted(splits),
    }
    atomic_write_text(options.out_dir / STATE_NAME, json.dumps(state, indent=1) + "\n")
    report.notice = notice_text(PACKAGES[name] for name in packages)
    atomic_write_text(options.out_dir / NOTICE_NAME, report.notice)

    report.classes = selection.classes
    report.unreadable = {
        style: dict(cache.index.errors) for style, cache in caches.items() if cache.index.errors
    }
    report.dropped = _count_dropped(concepts, caches)
    report.elapsed_s = time.perf_counter() - start
    return report


def _remove_stale_outputs(
    out_dir: Path, packages: Sequence[str], classes: Sequence[str], splits: Mapping[str, Any]
) -> None:
    """Delete outputs of an earlier build that this build would otherwise reuse wrongly.

    Images are reused whenever their file exists, so they must go when package versions change.
    Mask values are class indices, so composites must go when the class list changes. Manifests
    of splits this build does not produce are removed as well.
    """
    path = out_dir / STATE_NAME
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        previous = {}
    specs = [PACKAGES[name].spec for name in packages]
    if previous.get("packages") != specs:
        logger.info("Package versions changed; removing images built from the old ones")
        shutil.rmtree(out_dir / "images", ignore_errors=True)
        shutil.rmtree(out_dir / "segmentation", ignore_errors=True)
    elif previous.get("classes") != list(classes):
        logger.info("Class list changed; removing segmentation composites whose masks used the old one")
        shutil.rmtree(out_dir / "segmentation", ignore_errors=True)
    for split in set(previous.get("splits", [])) - set(splits):
        (out_dir / f"{split}.jsonl").unlink(missing_ok=True)


def _needed_packages(styles: Sequence[str]) -> list[str]:
    names = ["emoji-datasource", "openmoji"]
    names += [STYLES[style].package for style in styles]
    if any(STYLES[style].folder == "by-name" for style in styles):
        names += [STYLES[style].package for style in NAME_SOURCES]
    return sorted(set(names))


def _render_styles(
    options: BuildOptions, concepts: Sequence[Concept], tarballs: Mapping[str, Path]
) -> dict[str, RenderCache]:
    concept_names = {concept.key: concept.name for concept in concepts}
    name_index: dict[str, str] | None = None
    caches = {}
    for style_name in options.styles:
        style = STYLES[style_name]
        package = PACKAGES[style.package]
        if style.folder == "by-name" and name_index is None:
            name_index = by_name_index(
                {name: tarballs[STYLES[name].package] for name in NAME_SOURCES}, concept_names
            )
        drawings = load_drawings(style, tarballs[style.package], name_index)
        keys = _render_keys(style_name, concepts)
        cache = RenderCache(options.cache_dir / "renders" / f"{style_name}-{package.version}")
        cache.render_missing(
            [drawings[key] for key in sorted(keys) if key in drawings], f"render {style_name}"
        )
        caches[style_name] = cache
    return caches


def _render_keys(style: str, concepts: Sequence[Concept]) -> set[str]:
    keys = {concept.key for concept in concepts}
    if style in PRETRAIN_STYLES:
        keys |= {variant for concept in concepts for variant in concept.variants}
    return keys


def _write_renditions(
    out_dir: Path, splits: Mapping[str, Sequence[Mapping[str, Any]]], caches: Mapping[str, RenderCache]
) -> None:
    renditions = sorted(
        {
            (row["style"], row["key"], row["image"])
            for rows in splits.values()
            for row in rows
            if "mask" not in row
        }
    )
    pending = [item for item in renditions if not (out_dir / item[2]).exists()]
    for style, key, path in tqdm(pending, desc="write images", unit="img", leave=False):
        save_png(on_white(caches[style].load(key)), out_dir / path)


def _write_composites(
    out_dir: Path,
    splits: Mapping[str, list[dict[str, Any]]],
    caches: Mapping[str, RenderCache],
    classes: Sequence[str],
) -> None:
    rows = [row for rows in splits.values() for row in rows if "mask" in row]
    pending = [
        row for row in rows if not ((out_dir / row["image"]).exists() and (out_dir / row["mask"]).exists())
    ]
    if not pending:
        return
    photos = load_photos()
    class_index = {label: index for index, label in enumerate(classes)}
    emoji_cache: dict[tuple[str, str], Image.Image] = {}

    def load_emoji(style: str, key: str) -> Image.Image:
        if (style, key) not in emoji_cache:
            emoji_cache[(style, key)] = caches[style].load(key)
        return emoji_cache[(style, key)]

    for row in tqdm(pending, desc="compose segmentation", unit="img", leave=False):
        image, mask = compose(row, photos, load_emoji, class_index)
        save_png(image, out_dir / row["image"])
        save_png(mask, out_dir / row["mask"])


def _summarize(rows: Sequence[Mapping[str, Any]]) -> SplitSummary:
    labels = {
        label for row in rows for label in ([row["label"]] if "label" in row else row.get("labels", []))
    }
    concepts = {concept for row in rows for concept in row.get("concepts", [row["concept"]])}
    return SplitSummary(images=len(rows), classes=len(labels), concepts=len(concepts))


def _count_dropped(concepts: Sequence[Concept], caches: Mapping[str, RenderCache]) -> dict[str, int]:
    dropped: Counter[str] = Counter()
    for style, cache in caches.items():
        for key in _render_keys(style, concepts):
            if key in cache.index.foreground and not cache.index.usable(key):
                dropped[style] += 1
    return dict(sorted(dropped.items()))
