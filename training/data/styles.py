"""The rendition styles: the package of each one and how its drawings map to keys."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import Drawing, slugify
from .keys import normalize_key
from .sources import read_members

logger = logging.getLogger(__name__)

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
XLINK_NAMESPACE = "http://www.w3.org/1999/xlink"


@dataclass(frozen=True)
class Style:
    """Location and layout of one style's drawings.

    `layout` is one of:
        `iconify`: Iconify JSON with `chars.json` mapping code points to icon names.
        `iconify-by-name`: Iconify JSON without `chars.json`; icons are matched to keys through
            the Iconify names that the code-point-mapped sets use.
        `svg-folder`: one `<HEXCODE>.svg` file per emoji in `folder`.
        `raster-folder`: one `<codepoints>.webp` or `.png` file per emoji in `folder`.
    """

    name: str
    package: str
    layout: str
    folder: str = ""


STYLES: dict[str, Style] = {
    style.name: style
    for style in (
        Style("noto", "@iconify-json/noto", "iconify"),
        Style("twemoji", "@iconify-json/twemoji", "iconify"),
        Style("openmoji-color", "openmoji", "svg-folder", "color/svg"),
        Style("openmoji-black", "openmoji", "svg-folder", "black/svg"),
        Style("fluent-flat", "@iconify-json/fluent-emoji-flat", "iconify"),
        Style("fluent-high-contrast", "@iconify-json/fluent-emoji-high-contrast", "iconify"),
        Style("fluent-3d", "@lobehub/fluent-emoji-3d", "raster-folder", "assets"),
        Style("noto-v1", "@iconify-json/noto-v1", "iconify", "by-name"),
        Style("emojione", "@iconify-json/emojione", "iconify", "by-name"),
    )
}
# Sets whose `chars.json` defines the Iconify name of each key; the by-name sets reuse those names.
NAME_SOURCES = ("noto", "twemoji", "fluent-flat")


def load_drawings(
    style: Style, tarball: Path, names_to_keys: Mapping[str, str] | None = None
) -> dict[str, Drawing]:
    """Return key -> drawing for every emoji that `style`'s package contains.

    Args:
        style: The style to read.
        tarball: The verified tarball of `style.package`.
        names_to_keys: Iconify icon name -> key, needed only for by-name Iconify sets.
    """
    if style.layout == "iconify":
        if style.folder == "by-name":
            if names_to_keys is None:
                raise ValueError(f"style {style.name!r} is matched by icon name; pass names_to_keys.")
            return _iconify_drawings(style, tarball, names_to_keys)
        return _iconify_drawings(style, tarball, None)
    return _folder_drawings(style, tarball)


def iconify_names(tarball: Path) -> dict[str, str]:
    """Return Iconify icon name -> key from the `chars.json` of an Iconify set."""
    chars = json.loads(read_members(tarball, lambda name: name == "chars.json")["chars.json"])
    return {icon: normalize_key(code_points) for code_points, icon in chars.items()}


def _iconify_drawings(
    style: Style, tarball: Path, names_to_keys: Mapping[str, str] | None
) -> dict[str, Drawing]:
    files = read_members(tarball, lambda name: name in ("icons.json", "chars.json"))
    icon_set = json.loads(files["icons.json"])
    if names_to_keys is None:
        chars = json.loads(files["chars.json"])
        keyed_names = sorted((normalize_key(points), icon) for points, icon in chars.items())
    else:
        known = set(icon_set["icons"]) | set(icon_set.get("aliases", {}))
        keyed_names = sorted((names_to_keys[icon], icon) for icon in known if icon in names_to_keys)
    drawings: dict[str, Drawing] = {}
    for key, icon in keyed_names:
        if key in drawings:
            continue  # Several names for one key: the first in sorted order wins, on every machine.
        svg = iconify_svg(icon_set, icon)
        if svg is not None:
            drawings[key] = Drawing(style.name, key, "svg", svg.encode("utf-8"), f"{style.package}:{icon}")
    return drawings


def iconify_svg(icon_set: Mapping[str, Any], icon: str) -> str | None:
    """Assemble a standalone SVG document for `icon`, following aliases and their flips.

    Returns:
        The SVG markup, or None if `icon` is neither an icon nor an alias in `icon_set`.
    """
    transform: dict[str, Any] = {"hFlip": False, "vFlip": False, "rotate": 0}
    name = icon
    for _ in range(8):  # Iconify allows alias chains; eight levels is far beyond any real set.
        if name in icon_set["icons"]:
            break
        alias = icon_set.get("aliases", {}).get(name)
        if alias is None:
            return None
        _merge_transform(transform, alias)
        name = alias["parent"]
    else:
        return None
    data = icon_set["icons"][name]
    _merge_transform(transform, data)
    left = data.get("left", icon_set.get("left", 0))
    top = data.get("top", icon_set.get("top", 0))
    width = data.get("width", icon_set.get("width", 16))
    height = data.get("height", icon_set.get("height", 16))
    body = _transformed_body(data["body"], transform, left, top, width, height)
    return (
        f'<svg xmlns="{SVG_NAMESPACE}" xmlns:xlink="{XLINK_NAMESPACE}" '
        f'viewBox="{left} {top} {width} {height}">{body}</svg>'
    )


def _merge_transform(transform: dict[str, Any], data: Mapping[str, Any]) -> None:
    transform["hFlip"] ^= bool(data.get("hFlip", False))
    transform["vFlip"] ^= bool(data.get("vFlip", False))
    transform["rotate"] = (transform["rotate"] + int(data.get("rotate", 0))) % 4


def _transformed_body(
    body: str, transform: Mapping[str, Any], left: float, top: float, width: float, height: float
) -> str:
    center_x, center_y = left + width / 2, top + height / 2
    operations = []
    if transform["rotate"]:
        operations.append(f"rotate({90 * transform['rotate']} {center_x} {center_y})")
    if transform["hFlip"] or transform["vFlip"]:
        scale_x = -1 if transform["hFlip"] else 1
        scale_y = -1 if transform["vFlip"] else 1
        operations.append(
            f"translate({center_x} {center_y}) scale({scale_x} {scale_y}) translate({-center_x} {-center_y})"
        )
    if not operations:
        return body
    return f'<g transform="{" ".join(operations)}">{body}</g>'


def _folder_drawings(style: Style, tarball: Path) -> dict[str, Drawing]:
    prefix = style.folder.rstrip("/") + "/"
    kind = "svg" if style.layout == "svg-folder" else "raster"
    suffixes = (".svg",) if kind == "svg" else (".webp", ".png")
    files = read_members(tarball, lambda name: name.startswith(prefix) and name.endswith(suffixes))
    drawings: dict[str, Drawing] = {}
    for path in sorted(files):
        stem = path[len(prefix) :].rsplit(".", 1)[0]
        try:
            key = normalize_key(stem)
        except ValueError:
            logger.debug("Skipping %s: its name is not a code point sequence", path)
            continue
        if key not in drawings:  # `00a9-fe0f.webp` and `a9-fe0f.webp` are one key; sorted order decides.
            drawings[key] = Drawing(style.name, key, kind, files[path], f"{style.package}:{path}")
    return drawings


def by_name_index(name_tarballs: Mapping[str, Path], concept_names: Mapping[str, str]) -> dict[str, str]:
    """Build Iconify icon name -> key from the code-point-mapped sets and the CLDR names.

    Args:
        name_tarballs: Tarballs of the sets in `NAME_SOURCES`, by style.
        concept_names: Key -> CLDR name; its slug is the name Iconify would give the icon.
    """
    index: dict[str, str] = {}
    for key, name in sorted(concept_names.items()):
        index.setdefault(slugify(name), key)
    for style in NAME_SOURCES:
        for icon, key in sorted(iconify_names(name_tarballs[style]).items()):
            index.setdefault(icon, key)
    return index
