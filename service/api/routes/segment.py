"""Open-vocabulary segmentation from dense patch-text similarities."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import APIRouter, Request
from PIL import Image

from ...errors import ERROR_RESPONSES, APIError
from ..deps import SettingsDep, StateDep, TenantDep
from ..inputs import openapi_body, parse_body
from ..ops import check_texts, decode_images, truncated_prompts
from ..schemas import SegmentRequest, SegmentResponse

router = APIRouter(tags=["inference"])

MAX_CLASSES = 255  # label map pixels are 8-bit class indices


@router.post(
    "/v1/tenants/{tenant}/segment",
    response_model=SegmentResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_body(SegmentRequest, {"image": "image file"}),
)
async def segment(
    tenant: TenantDep, request: Request, state: StateDep, settings: SettingsDep
) -> SegmentResponse:
    """Label every pixel with the most similar class name.

    Each patch token goes through the vision tower's `ln_post` and `proj`, is compared by cosine with
    the class-name embeddings, and the patch logits are upsampled bilinearly to the image size.
    Example: `curl -H "Authorization: Bearer $KEY" -F image=@street.jpg -F classes=road -F classes=sky
    -F overlay=true .../v1/tenants/acme/segment`.
    """
    body = await parse_body(request, SegmentRequest, settings)
    check_texts(body.classes, settings, "classes")
    if len(body.classes) > MAX_CLASSES:
        raise APIError(
            413, "too_many_classes", f"{len(body.classes)} classes sent; the maximum is {MAX_CLASSES}."
        )
    if not state.backbone.supports_dense():
        raise APIError(
            400,
            "segmentation_unsupported",
            f"{state.backbone.arch} does not pool from a class token; segmentation needs a plain ViT.",
        )
    (image,) = await decode_images([body.image], settings)
    variant = await state.registry.variant(tenant, body.alpha)

    head = await state.registry.encode_labels(variant, body.classes)  # (C, D)
    pixels = await asyncio.to_thread(state.backbone.dense_pixels, image)
    patches = (await state.worker.submit("dense", variant, pixels))[0]  # (grid_h, grid_w, D)
    labels = await asyncio.to_thread(_label_map, patches, head, image.size)  # (H, W) uint8

    counts = np.bincount(labels.reshape(-1), minlength=len(body.classes))
    fractions = {name: float(counts[i] / labels.size) for i, name in enumerate(body.classes)}
    overlay = _overlay_png(image, labels, len(body.classes)) if body.overlay else None
    return SegmentResponse(
        tenant=tenant,
        version=variant.version,
        alpha=variant.alpha,
        width=image.width,
        height=image.height,
        classes=body.classes,
        label_map_png=_png(Image.fromarray(labels, mode="L")),
        fractions=fractions,
        overlay_png=overlay,
        truncated_texts=truncated_prompts(state, body.classes, variant.templates),
    )


def _label_map(patches: torch.Tensor, head: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    logits = patches @ head.T  # (grid_h, grid_w, C)
    logits = logits.permute(2, 0, 1).unsqueeze(0)  # (1, C, grid_h, grid_w)
    width, height = size
    upsampled = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return upsampled[0].argmax(dim=0).to(torch.uint8).numpy()


def _palette(num_classes: int) -> np.ndarray:
    generator = np.random.default_rng(0)  # fixed colours, so a class keeps its colour across requests
    return generator.integers(0, 256, size=(num_classes, 3), dtype=np.uint8)


def _overlay_png(image: Image.Image, labels: np.ndarray, num_classes: int) -> str:
    colours = Image.fromarray(_palette(num_classes)[labels], mode="RGB")
    return _png(Image.blend(image.convert("RGB"), colours, alpha=0.5))


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
