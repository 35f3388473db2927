"""Rank candidates, or the tenant's gallery, against a text or image query."""

from __future__ import annotations

import asyncio

import torch
from fastapi import APIRouter, Request

from ...cache import Variant
from ...errors import ERROR_RESPONSES, APIError
from ...images import decode_image
from ...state import ServiceState
from ..deps import SettingsDep, StateDep, TenantDep
from ..inputs import openapi_body, parse_body
from ..ops import check_texts, decode_images, encode_images, encode_texts, model_input_side
from ..schemas import RetrieveHit, RetrieveRequest, RetrieveResponse

router = APIRouter(tags=["inference"])


@router.post(
    "/v1/tenants/{tenant}/retrieve",
    response_model=RetrieveResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_body(
        RetrieveRequest, {"query_image": "query image file", "candidate_images": "candidate image files"}
    ),
)
async def retrieve(
    tenant: TenantDep, request: Request, state: StateDep, settings: SettingsDep
) -> RetrieveResponse:
    """Rank `candidate_texts` or `candidate_images` by cosine similarity to one query.

    Without candidates the tenant's gallery is ranked; its embeddings belong to the adapter version
    and alpha serving this request and are recomputed after a swap. Example JSON:
    `{"query_text": "a red fox in snow", "candidate_images": ["<base64>", "<base64>"], "top_k": 1}`.
    """
    body = await parse_body(request, RetrieveRequest, settings)
    if (body.query_text is None) == (body.query_image is None):
        raise APIError(400, "invalid_query", "send exactly one of query_text and query_image.")
    if body.candidate_texts is not None and body.candidate_images is not None:
        raise APIError(400, "invalid_candidates", "send candidate_texts or candidate_images, not both.")
    variant = await state.registry.variant(tenant, body.alpha)

    truncated: list[int] = []
    if body.query_text is not None:
        check_texts([body.query_text], settings, "query_text")
        query, truncated = await encode_texts(state, variant, [body.query_text])
    else:
        images = await decode_images([body.query_image], settings, model_input_side(state))
        query = await encode_images(state, variant, images)

    ids: list[str] | None = None
    metadata: list[dict] | None = None
    if body.candidate_texts == [] or body.candidate_images == []:
        candidates = query.new_empty((0, query.shape[-1]))  # an empty candidate list gives no hits
    elif body.candidate_texts is not None:
        check_texts(body.candidate_texts, settings, "candidate_texts")
        candidates, _ = await encode_texts(state, variant, body.candidate_texts)
    elif body.candidate_images is not None:
        images = await decode_images(body.candidate_images, settings, model_input_side(state))
        candidates = await encode_images(state, variant, images)
    else:
        ids, metadata, candidates = await gallery_embeddings(state, variant, settings.max_image_pixels)

    scores = (query @ candidates.T)[0]  # (num_candidates,)
    top = scores.topk(min(body.top_k, len(scores)))
    hits = [
        RetrieveHit(
            index=None if ids else i,
            id=ids[i] if ids else None,
            score=float(s),
            metadata=metadata[i] if metadata else None,
        )
        for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
    return RetrieveResponse(
        tenant=tenant,
        version=variant.version,
        alpha=variant.alpha,
        source="gallery" if ids else "candidates",
        hits=hits,
        truncated_texts=truncated,
    )


async def gallery_embeddings(state: ServiceState, variant: Variant, max_pixels: int):
    """Return gallery ids, metadata and embeddings under `variant`, embedding and storing them when stale."""
    items = state.galleries.items(variant.tenant)
    if not items:
        raise APIError(
            404, "gallery_empty", f"tenant {variant.tenant!r} has no gallery items; add some first."
        )
    ids = [item["id"] for item in items]
    min_side = model_input_side(state)
    stored = state.galleries.load_embeddings(variant.tenant, variant.version, variant.alpha, ids)
    if stored is not None:
        return ids, [item["metadata"] for item in items], stored

    embeddings = torch.empty(len(items), 0)
    rows: dict[int, torch.Tensor] = {}
    text_positions = [i for i, item in enumerate(items) if item["kind"] == "text"]
    image_positions = [i for i, item in enumerate(items) if item["kind"] == "image"]
    if text_positions:
        encoded, _ = await encode_texts(state, variant, [items[i]["text"] for i in text_positions])
        rows.update(zip(text_positions, encoded, strict=True))
    for start in range(0, len(image_positions), 64):
        chunk = image_positions[start : start + 64]
        images = await asyncio.to_thread(
            lambda chunk=chunk: [
                decode_image(
                    state.galleries.image_bytes(variant.tenant, items[i]["id"]), i, max_pixels, min_side
                )
                for i in chunk
            ]
        )
        rows.update(zip(chunk, await encode_images(state, variant, images), strict=True))
    embeddings = torch.stack([rows[i] for i in range(len(items))])
    await asyncio.to_thread(
        state.galleries.save_embeddings, variant.tenant, variant.version, variant.alpha, ids, embeddings
    )
    return ids, [item["metadata"] for item in items], embeddings
