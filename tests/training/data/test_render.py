import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.catalog import Drawing
from training.data.files import DiskFullError, atomic_write
from training.data.render import (
    INDEX_NAME,
    RenderCache,
    RenderError,
    foreground_fraction,
    on_white,
    render_drawing,
)
from training.data.styles import iconify_svg

# A red block in the left half of a 16 x 16 icon; its alias is mirrored, so the block moves right.
ICON_SET = {
    "prefix": "toy",
    "width": 16,
    "height": 16,
    "icons": {"left-block": {"body": '<rect x="0" y="0" width="8" height="16" fill="#ff0000"/>'}},
    "aliases": {"right-block": {"parent": "left-block", "hFlip": True}, "twice": {"parent": "right-block"}},
}


def svg_drawing(svg: str, key: str = "1F600") -> Drawing:
    return Drawing("toy", key, "svg", svg.encode(), f"toy:{key}")


def test_iconify_alias_is_mirrored() -> None:
    left = np.asarray(render_drawing(svg_drawing(iconify_svg(ICON_SET, "left-block"))))
    right = np.asarray(render_drawing(svg_drawing(iconify_svg(ICON_SET, "twice"))))
    assert left.shape == (64, 64, 4)
    assert left[32, 10, 3] == 255
    assert left[32, 54, 3] == 0
    np.testing.assert_array_equal(right, left[:, ::-1])


def test_iconify_unknown_icon_returns_none() -> None:
    assert iconify_svg(ICON_SET, "missing") is None


def test_render_webp_fits_square() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (256, 128), (0, 128, 255, 255)).save(buffer, format="WEBP", lossless=True)
    image = render_drawing(Drawing("toy", "1F600", "raster", buffer.getvalue(), "toy:wide.webp"))
    assert image.size == (64, 64)
    assert image.mode == "RGBA"
    assert foreground_fraction(image) == pytest.approx(0.5)


def test_render_rejects_garbage() -> None:
    with pytest.raises(RenderError, match="toy:1F600"):
        render_drawing(svg_drawing("<svg this is not svg"))


def test_on_white_composites() -> None:
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (10, 20, 30, 255))
    rgb = on_white(image)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 0)) == (10, 20, 30)


def test_render_cache_skips_and_reports_unreadable(tmp_path: Path) -> None:
    good = svg_drawing(iconify_svg(ICON_SET, "left-block"), "1F600")
    empty = svg_drawing('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"></svg>', "1F601")
    broken = svg_drawing("<svg broken", "1F602")
    cache = RenderCache(tmp_path)
    cache.render_missing([good, empty, broken], "test")
    assert cache.index.usable("1F600")
    assert not cache.index.usable("1F601")  # renders, but covers under 5% of the square
    assert cache.index.present("1F601")
    assert "1F602" in cache.index.errors
    assert not cache.path("1F602").exists()
    reopened = RenderCache(tmp_path)
    assert reopened.index.errors.keys() == {"1F602"}
    assert reopened.index.foreground == cache.index.foreground


def test_render_cache_resumes_without_index(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path)
    cache.render_missing([svg_drawing(iconify_svg(ICON_SET, "left-block"))], "test")
    (tmp_path / INDEX_NAME).unlink()  # as if the run stopped before saving its index
    resumed = RenderCache(tmp_path)
    # A drawing that cannot render proves the cached PNG is measured, not rendered again.
    resumed.render_missing([svg_drawing("<svg broken")], "test")
    assert resumed.index.foreground["1F600"] == pytest.approx(0.5)
    assert resumed.index.errors == {}
    assert json.loads((tmp_path / INDEX_NAME).read_text())["foreground"]["1F600"] == pytest.approx(0.5)


def test_atomic_write_reports_full_disk(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full to produce a real ENOSPC")

    def write_to_full_device(temporary: Path) -> None:
        with open("/dev/full", "wb") as device:
            device.write(b"x" * 4096)
            device.flush()

    with pytest.raises(DiskFullError, match="no space left while writing .*out.png"):
        atomic_write(tmp_path / "out.png", write_to_full_device)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "manifest.jsonl"
    target.write_text("old\n")

    def fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert target.read_text() == "old\n"
    assert [path.name for path in tmp_path.iterdir()] == ["manifest.jsonl"]
