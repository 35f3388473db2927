"""Steps the routes share: input limits, decoding off the event loop, and encoder calls via the worker."""

from __future__ import annotations

import asyncio

import torch
from PIL import Image

from ..cache import Variant
from ..errors import APIError
from ..images import decode_images as decode_all
from ..settings import Settings
from ..state import ServiceState


def check_texts(texts: list[str], settings: Settings, field: str = "texts") -> None:
    """Reject too many or too long texts; the message names the field, the value and the limit."""
    if len(texts) > settings.max_texts:
        raise APIError(
            413,
            "too_many_texts",
            f"{field} has {len(texts)} entries, over the limit of {settings.max_texts} (RADAPTER_MAX_TEXTS).",
        )
    for index, text in enumerate(texts):
        if not text.strip():
            raise APIError(400, "invalid_text", f"{field}[{index}] is empty; send non-blank text.")
        if len(text) > settings.max_text_chars:
            raise APIError(
                413,
                "text_too_long",
                f"{field}[{index}] has {len(text)} characters, over the limit of {settings.max_text_chars} "
                "(RADAPTER_MAX_TEXT_CHARS).",
            )


async def decode_images(
    blobs: list[bytes], settings: Settings, min_side: int | None = None
) -> list[Image.Image]:
    """Decode request images in a thread, enforcing the count, per-image and per-request pixel limits.

    With `min_side` (the model's input size) images may decode smaller, keeping that shorter side.
    """
    if len(blobs) > settings.max_images:
        raise APIError(
            413,
            "too_many_images",
            f"{len(blobs)} images sent, over the limit of {settings.max_images} (RADAPTER_MAX_IMAGES).",
        )

    return await asyncio.to_thread(decode_all, blobs, settings.max_image_pixels, min_side)


async def encode_images(state: ServiceState, variant: Variant, images: list[Image.Image]) -> torch.Tensor:
    """Return L2-normalised image embeddings `(N, D)`."""
    pixels = await asyncio.to_thread(state.backbone.pixels, images)
    return await state.worker.submit("image", variant, pixels)


async def encode_texts(
    state: ServiceState, variant: Variant, texts: list[str]
) -> tuple[torch.Tensor, list[int]]:
    """Return L2-normalised text embeddings `(N, D)` and the indices of texts cut to the context length."""
    tokens = state.backbone.tokenize(texts)
    embeddings = await state.worker.submit("text", variant, tokens.ids)
    return embeddings, [index for index, cut in enumerate(tokens.truncated) if cut]


def model_input_side(state: ServiceState) -> int:
    """Return the larger side of the model's input, the smallest image size worth decoding."""
    return max(state.backbone.image_size)


def truncated_prompts(state: ServiceState, labels: list[str], templates: list[str]) -> list[int]:
    """Return indices of labels with at least one prompt cut to the context length."""
    from ..registry import prompts

    flags = state.backbone.tokenize(prompts(labels, templates)).truncated
    per_label = len(templates)
    return [index for index in range(len(labels)) if any(flags[index * per_label : (index + 1) * per_label])]
