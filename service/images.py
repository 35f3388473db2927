"""Decode untrusted image bytes into RGB pictures, rejecting bombs, truncation and unknown formats."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import APIError

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF"}
WHITE = (255, 255, 255)

# Pillow's own bomb guard (a warning above Image.MAX_IMAGE_PIXELS, 89,478,485 by default in Pillow 13,
# and an error above twice that) would cap RADAPTER_MAX_IMAGE_PIXELS and replace its message with Pillow's.
# `_open` checks the header size against the setting before any pixel is decoded, so the guard is off.
Image.MAX_IMAGE_PIXELS = None

# Decoded pixels per request, summed over its images. Decoding is sequential and images are reduced
# towards the model input size, but a PNG of 36 M pixels still needs 108 MB as RGB while it decodes.
# NOTE: a module constant until it becomes a setting.
MAX_REQUEST_PIXELS = 64_000_000


def decode_image(data: bytes, index: int, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Decode one image to 8-bit RGB, upright per its EXIF orientation, transparency on white.

    The pixel count is checked from the header before any pixel data is decoded, so a small file
    that claims a huge canvas (a decompression bomb) costs nothing. With `min_side`, the result may
    be smaller than the file but keeps its shorter side at least `min_side` pixels. Every failure is
    a 4xx `APIError` naming the image's position in the request.
    """
    return load_image(open_image(data, index, max_pixels, min_side), index, min_side)


def decode_images(
    blobs: list[bytes],
    max_pixels: int,
    min_side: int | None = None,
    max_total_pixels: int = MAX_REQUEST_PIXELS,
) -> list[Image.Image]:
    """Decode a request's images like `decode_image`, checking their decoded pixels together first.

    Every header is read before any image is decoded, so a request over `max_total_pixels` (raised to
    `max_pixels` when that is larger, so any single allowed image fits) costs no decoding.
    """
    opened = [open_image(blob, index, max_pixels, min_side) for index, blob in enumerate(blobs)]
    total = sum(image.size[0] * image.size[1] for image in opened)
    limit = max(max_total_pixels, max_pixels)
    if total > limit:
        raise APIError(
            413,
            "images_too_large",
            f"the {len(blobs)} images decode to {total} pixels together, over the per-request limit of "
            f"{limit}; send fewer or smaller images.",
        )
    return [load_image(image, index, min_side) for index, image in enumerate(opened)]


def open_image(data: bytes, index: int, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Parse and check the header without decoding pixels; with `min_side`, let a JPEG decode scaled down.

    `Image.draft` makes the JPEG decoder scale by 1/2, 1/4 or 1/8 while keeping both sides at least
    `min_side`, so `image.size` afterwards is the size that will be decoded.
    """
    if not data:
        raise APIError(400, "invalid_image", f"image {index} is empty (0 bytes); send the file's content.")
    image = _open(data, index, max_pixels)
    if min_side is not None and image.format in ("JPEG", "MPO"):
        image.draft(None, (min_side, min_side))
    return image


def load_image(image: Image.Image, index: int, min_side: int | None = None) -> Image.Image:
    """Decode an image from `open_image` to RGB, box-reducing it by an integer factor to near `min_side`."""
    try:
        image.seek(0)  # first frame of an animated GIF or WebP, first page of a TIFF
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Truncated or corrupt pixel data surfaces here, after the header parsed fine.
        raise APIError(
            400, "invalid_image", f"image {index} ({image.format}) is truncated or corrupt: {error}"
        ) from error
    factor = min(rgb.size) // min_side if min_side else 1
    # reduce() keeps ceil(side / factor) pixels, so the shorter side stays at least min_side.
    return rgb.reduce(factor) if factor >= 2 else rgb


def _open(data: bytes, index: int, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise APIError(
            400,
            "invalid_image",
            f"image {index} is not a decodable image; send JPEG, PNG, WebP, GIF, BMP or TIFF.",
        ) from error
    except (OSError, ValueError, SyntaxError) as error:
        raise APIError(400, "invalid_image", f"image {index} has an invalid header: {error}") from error
    if image.format not in ALLOWED_FORMATS:
        raise APIError(
            415,
            "unsupported_image_format",
            f"image {index} is {image.format}; send JPEG, PNG, WebP, GIF, BMP or TIFF.",
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise APIError(
            400, "invalid_image", f"image {index} has size {width}x{height}; it needs at least 1x1 pixels."
        )
    if width * height > max_pixels:
        raise _too_many_pixels(index, image.size, max_pixels)
    return image


def _too_many_pixels(index: int, size: tuple[int, int], max_pixels: int) -> APIError:
    width, height = size
    return APIError(
        413,
        "image_too_large",
        f"image {index} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
        "(RADAPTER_MAX_IMAGE_PIXELS); downscale it before sending.",
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale: map 0..65535 onto 0..255 instead of clipping at 255.
        values = np.asarray(image, dtype=np.float64) / 257.0
        gray = Image.fromarray(np.clip(values.round(), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.size and float(np.nanmax(values)) <= 1.0 else 1.0
        gray = Image.fromarray(
            np.clip(np.nan_to_num(values * scale).round(), 0, 255).astype(np.uint8), mode="L"
        )
        return gray.convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode == "P" and "transparency" in image.info or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("L", "1") and "transparency" in image.info:
        return _to_rgb(image.convert("LA"))
    if mode == "RGB" and "transparency" in image.info:
        return _to_rgb(image.convert("RGBA"))
    return image.convert("RGB")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # an unusable embedded profile falls back to the naive conversion below
    return image.convert("RGB")
