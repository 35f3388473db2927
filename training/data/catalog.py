"""Emoji concepts from emoji-datasource and OpenMoji, and the drawing type shared by all styles."""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .keys import SKIN_TONES, normalize_key
from .sources import read_members

logger = logging.getLogger(__name__)

EXCLUDED_CATEGORY = "Component"


@dataclass(frozen=True)
class Concept:
    """A base emoji (no skin tone) with the text used for labels and captions.

    `name` is the CLDR short name where OpenMoji has it (`grinning face`, `flag: Egypt`), otherwise
    emoji-datasource's name in lower case.
    """

    key: str
    name: str
    short_names: tuple[str, ...]
    category: str
    subcategory: str
    sort_order: int
    tags: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Drawing:
    """One style's source for one key: SVG markup or the bytes of a raster file (WebP, PNG)."""

    style: str
    key: str
    kind: str
    data: bytes
    origin: str


def load_concepts(datasource: Path, openmoji: Path) -> list[Concept]:
    """Read the base emoji of emoji-datasource, without category Component, sorted by key.

    Args:
        datasource: Tarball of `emoji-datasource`; `emoji.json` is read from it.
        openmoji: Tarball of `openmoji`; `data/openmoji.json` supplies CLDR names and tags.
    """
    entries = json.loads(read_members(datasource, lambda name: name == "emoji.json")["emoji.json"])
    annotations = load_openmoji_annotations(openmoji)
    concepts = []
    for entry in entries:
        if entry["category"] == EXCLUDED_CATEGORY:
            continue
        key = normalize_key(entry["unified"])
        annotation, tags = annotations.get(key, ("", ()))
        variants = sorted(
            normalize_key(variant["unified"]) for variant in entry.get("skin_variations", {}).values()
        )
        concepts.append(
            Concept(
                key=key,
                name=annotation or entry["name"].lower(),
                short_names=tuple(name.replace("_", " ") for name in entry["short_names"]),
                category=entry["category"],
                subcategory=entry["subcategory"],
                sort_order=int(entry["sort_order"]),
                tags=tags,
                variants=tuple(variants),
            )
        )
    return sorted(concepts, key=lambda concept: concept.key)


def load_openmoji_annotations(openmoji: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Return key -> (CLDR annotation, tags) from OpenMoji's `data/openmoji.json`."""
    entries = json.loads(
        read_members(openmoji, lambda name: name == "data/openmoji.json")["data/openmoji.json"]
    )
    annotations = {}
    for entry in entries:
        try:
            key = normalize_key(entry["hexcode"])
        except ValueError:
            continue  # OpenMoji's own extras use private-use names, not code points.
        tags = tuple(
            tag.strip() for tag in f"{entry.get('tags', '')},{entry.get('openmoji_tags', '')}".split(",")
        )
        annotations[key] = (entry.get("annotation", ""), tuple(tag for tag in tags if tag))
    return annotations


def skin_tone_name(variant: str) -> str:
    """Return the skin tones in `variant` as CLDR words, e.g. `medium-dark skin tone`."""
    tones = [SKIN_TONES[part] for part in variant.split("-") if part in SKIN_TONES]
    return ", ".join(dict.fromkeys(tones))


def slugify(name: str) -> str:
    """Turn a CLDR name into an Iconify icon name: `flag: Côte d’Ivoire` -> `flag-cote-d-ivoire`."""
    decomposed = unicodedata.normalize("NFKD", name.lower())
    ascii_name = decomposed.encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")
