"""Rasterise drawings to 64 x 64 RGBA, cache the results, and measure their foreground."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import resvg_py
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .catalog import Drawing
from .files import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

SIZE = 64  # pixels per side of every rendition
ALPHA_THRESHOLD = 127  # alpha above this counts as foreground, for masks and coverage
MIN_FOREGROUND = 0.05  # renditions covering less of the square are dropped as near-empty
MAX_FOREGROUND = 0.95  # renditions covering more are dropped: they are squares, not shapes
INDEX_NAME = "index.json"


class RenderError(ValueError):
    """Raised when a drawing cannot be decoded or rasterised."""


def render_drawing(drawing: Drawing, size: int = SIZE) -> Image.Image:
    """Rasterise `drawing` to a `size` x `size` RGBA image, centred with its aspect ratio kept.

    System fonts are not loaded, so a drawing renders the same on every machine.

    Raises:
        RenderError: The SVG or raster data cannot be decoded.
    """
    try:
        if drawing.kind == "svg":
            png = resvg_py.svg_to_bytes(
                svg_string=drawing.data.decode("utf-8"), width=size, skip_system_fonts=True
            )
            image = Image.open(io.BytesIO(bytes(png)))
        else:
            image = Image.open(io.BytesIO(drawing.data))
        image.load()
    except (ValueError, OSError, UnidentifiedImageError) as error:
        raise RenderError(f"{drawing.origin} cannot be decoded: {error}") from error
    return fit_square(image.convert("RGBA"), size)


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """Scale `image` to fit a transparent `size` x `size` square and centre it there."""
    if image.size != (size, size):
        scale = size / max(image.size)
        width = max(1, round(image.width * scale))
        height = max(1, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    if image.size == (size, size):
        return image
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def foreground_fraction(image: Image.Image) -> float:
    """Return the fraction of pixels whose alpha exceeds `ALPHA_THRESHOLD`."""
    alpha = np.asarray(image.getchannel("A"))
    return float((alpha > ALPHA_THRESHOLD).mean())


def on_white(image: Image.Image) -> Image.Image:
    """Composite an RGBA image onto white and return it as RGB."""
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def save_png(image: Image.Image, path: Path) -> None:
    """Write `image` as PNG to `path` atomically."""
    atomic_write(path, lambda temporary: image.save(temporary, format="PNG"))


@dataclass
class RenderIndex:
    """Render cache index of one style: foreground fraction per key, or the error that stopped it."""

    foreground: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def present(self, key: str) -> bool:
        """Return whether the style's package has a drawing for `key`, readable or not."""
        return key in self.foreground or key in self.errors

    def usable(self, key: str) -> bool:
        """Return whether `key` rendered and its foreground lies within the kept range."""
        fraction = self.foreground.get(key)
        return fraction is not None and MIN_FOREGROUND <= fraction <= MAX_FOREGROUND


class RenderCache:
    """Rendered 64 px RGBA PNGs of one style under `folder`, one file per key, plus `index.json`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index = self._load_index()

    def path(self, key: str) -> Path:
        """Return the cached PNG path of `key`."""
        return self.folder / f"{key}.png"

    def load(self, key: str) -> Image.Image:
        """Return the cached RGBA rendering of `key`."""
        with Image.open(self.path(key)) as image:
            return image.convert("RGBA")

    def render_missing(self, drawings: Iterable[Drawing], description: str) -> None:
        """Render every drawing not yet in the cache and record it in the index.

        A drawing that cannot be decoded is skipped, logged and recorded in `index.errors`.
        """
        measured_before = len(self.index.foreground)
        pending = [drawing for drawing in drawings if not self._is_done(drawing.key)]
        if not pending:
            if len(self.index.foreground) != measured_before:
                self.save_index()  # PNGs left by an interrupted run were measured
            return
        for count, drawing in enumerate(tqdm(pending, desc=description, unit="img", leave=False), start=1):
            self._render_one(drawing)
            if count % 1000 == 0:
                self.save_index()  # A later run resumes from here, not from the start.
        self.save_index()

    def _is_done(self, key: str) -> bool:
        if key in self.index.errors:
            return True
        if key in self.index.foreground and self.path(key).exists():
            return True
        if self.path(key).exists():  # Written by an interrupted run before its index was saved.
            self.index.foreground[key] = foreground_fraction(self.load(key))
            return True
        return False

    def _render_one(self, drawing: Drawing) -> None:
        try:
            image = render_drawing(drawing)
        except RenderError as error:
            logger.warning("Skipping %s: %s", drawing.key, error)
            self.index.errors[drawing.key] = str(error)
            return
        save_png(image, self.path(drawing.key))
        self.index.foreground[drawing.key] = foreground_fraction(image)

    def _load_index(self) -> RenderIndex:
        path = self.folder / INDEX_NAME
        if not path.exists():
            return RenderIndex()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return RenderIndex(foreground=dict(data["foreground"]), errors=dict(data["errors"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            logger.warning("Ignoring unreadable render index %s; cached PNGs are measured again", path)
            return RenderIndex()

    def save_index(self) -> None:
        """Write the index atomically, keys sorted."""
        data = {"foreground": self.index.foreground, "errors": self.index.errors}
        atomic_write_text(self.folder / INDEX_NAME, json.dumps(data, sort_keys=True, indent=0) + "\n")
