"""Image and text embeddings from a tenant's adapted model."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...errors import ERROR_RESPONSES, APIError
from ..deps import SettingsDep, StateDep, TenantDep
from ..inputs import openapi_body, parse_body
from ..ops import check_texts, decode_images, encode_images, encode_texts, model_input_side
from ..schemas import EmbedRequest, EmbedResponse

router = APIRouter(tags=["inference"])


@router.post(
    "/v1/tenants/{tenant}/embed",
    response_model=EmbedResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_body(EmbedRequest, {"images": "image files (repeat the field for several)"}),
)
async def embed(tenant: TenantDep, request: Request, state: StateDep, settings: SettingsDep) -> EmbedResponse:
    """Return L2-normalised embeddings of the given images and texts in the tenant's shared space.

    Texts longer than the model's context are cut to fit, and their indices are listed in
    `truncated_texts`. Example JSON: `{"texts": ["a red fox"], "images": ["<base64>"], "alpha": 0.8}`.
    """
    body = await parse_body(request, EmbedRequest, settings)
    if not body.images and not body.texts:
        raise APIError(400, "empty_request", "send at least one entry in images or texts.")
    check_texts(body.texts, settings)
    images = await decode_images(body.images, settings, model_input_side(state))
    variant = await state.registry.variant(tenant, body.alpha)

    image_rows, text_rows, truncated = [], [], []
    if images:
        image_rows = (await encode_images(state, variant, images)).tolist()
    if body.texts:
        text_embeddings, truncated = await encode_texts(state, variant, body.texts)
        text_rows = text_embeddings.tolist()
    return EmbedResponse(
        tenant=tenant,
        version=variant.version,
        alpha=variant.alpha,
        image_embeddings=image_rows,
        text_embeddings=text_rows,
        truncated_texts=truncated,
    )
