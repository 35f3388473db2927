"""Per-tenant retrieval gallery: add, list and delete items (texts or images)."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, Response

from ...errors import ERROR_RESPONSES, APIError
from ...images import decode_image
from ..deps import SettingsDep, StateDep, TenantDep
from ..ops import check_texts, model_input_side
from ..schemas import GalleryAddRequest, GalleryItemOut, GalleryList

router = APIRouter(prefix="/v1/tenants/{tenant}/gallery", tags=["gallery"], responses=ERROR_RESPONSES)


def _out(item: dict) -> GalleryItemOut:
    return GalleryItemOut(id=item["id"], kind=item["kind"], text=item.get("text"), metadata=item["metadata"])


@router.post("/items", response_model=GalleryList, status_code=201)
async def add_items(
    tenant: TenantDep, body: GalleryAddRequest, state: StateDep, settings: SettingsDep
) -> GalleryList:
    """Add texts or base64 images to the gallery that `/retrieve` ranks when no candidates are sent.

    Each item has exactly one of `text` and `image`, an optional `id` and free-form `metadata`.
    Images are validated now and stored as sent, so a later adapter version can re-embed them.
    Example: `{"items": [{"id": "fox-1", "text": "a red fox", "metadata": {"sku": 17}}]}`.
    """
    state.registry.get(tenant)
    if len(body.items) > settings.max_images + settings.max_texts:
        raise APIError(
            413, "too_many_items", "send at most RADAPTER_MAX_IMAGES + RADAPTER_MAX_TEXTS items per call."
        )
    records, images = [], {}
    for index, item in enumerate(body.items):
        if (item.text is None) == (item.image is None):
            raise APIError(400, "invalid_item", f"items[{index}] needs exactly one of text and image.")
        record = {
            "id": item.id or uuid.uuid4().hex,
            "kind": "text" if item.text is not None else "image",
            "text": item.text,
            "metadata": item.metadata,
        }
        if item.text is not None:
            check_texts([item.text], settings, f"items[{index}].text")
        else:
            await asyncio.to_thread(
                decode_image, item.image, index, settings.max_image_pixels, model_input_side(state)
            )
            images[record["id"]] = item.image
        records.append(record)

    await asyncio.to_thread(state.galleries.add, tenant, records, images, settings.max_gallery_items)
    return GalleryList(tenant=tenant, items=[_out(record) for record in records])


@router.get("/items", response_model=GalleryList)
async def list_items(tenant: TenantDep, state: StateDep) -> GalleryList:
    """List the gallery's items in insertion order (without image bytes)."""
    return GalleryList(tenant=tenant, items=[_out(item) for item in state.galleries.items(tenant)])


@router.delete("/items/{item_id}", status_code=204)
async def delete_item(tenant: TenantDep, item_id: str, state: StateDep) -> Response:
    """Delete one gallery item and its stored image."""
    await asyncio.to_thread(state.galleries.delete, tenant, item_id)
    return Response(status_code=204)
