"""Decode untrusted image bytes into RGB pictures, rejecting bombs, truncation and unknown formats."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import APIError

ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF"}
WHITE = (255, 255, 255)

# Pillow's own bomb guard (a warning above Image.MAX_IMAGE_PIXELS, 89,478,485 by default in Pillow 13,
# and an error above twice that) would cap RADAPTER_MAX_IMAGE_PIXELS and answer with its own message.
# `_open` checks the header size against the setting before any pixel is decoded, so the guard is off.
Image.MAX_IMAGE_PIXELS = None


def decode_image(data: bytes, index: int, max_pixels: int) -> Image.Image:
    """Decode one image to 8-bit RGB, upright per its EXIF orientation, transparency on white.

    The pixel count is checked from the header before any pixel data is decoded, so a small file
    that claims a huge canvas (a decompression bomb) costs nothing. Every failure is a 4xx `APIError`
    naming the image's position in the request.
    """
    if not data:
        raise APIError(400, "invalid_image", f"image {index} is empty (0 bytes); send the file's content.")
    image = _open(data, index, max_pixels)
    try:
        image.seek(0)  # first frame of an animated GIF or WebP, first page of a TIFF
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Truncated or corrupt pixel data surfaces here, after the header parsed fine.
        raise APIError(
            400, "invalid_image", f"image {index} ({image.format}) is truncated or corrupt: {error}"
        ) from error


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
