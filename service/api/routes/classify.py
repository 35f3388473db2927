"""Zero-shot classification with a tenant's adapted model."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...errors import ERROR_RESPONSES, APIError
from ..deps import SettingsDep, StateDep, TenantDep
from ..inputs import openapi_body, parse_body
from ..ops import check_texts, decode_images, encode_images, model_input_side, truncated_prompts
from ..schemas import ClassifyRequest, ClassifyResponse, LabelScore

router = APIRouter(tags=["inference"])


@router.post(
    "/v1/tenants/{tenant}/classify",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_body(ClassifyRequest, {"images": "image files (repeat the field for several)"}),
)
async def classify(
    tenant: TenantDep, request: Request, state: StateDep, settings: SettingsDep
) -> ClassifyResponse:
    """Classify images into the tenant's labels, or into `labels` given in the request.

    Probabilities are a softmax over `logit_scale * cosine(image, label)`, where each label's embedding
    is the mean over the adapter's prompt templates, taken from the adapted text tower.

    Example: `curl -H "Authorization: Bearer $KEY" -F images=@cat.jpg -F top_k=3 .../v1/tenants/acme/classify`
    or JSON `{"images": ["<base64>"], "labels": ["cat", "dog"], "top_k": 2, "alpha": 0.5}`.
    """
    body = await parse_body(request, ClassifyRequest, settings)
    if body.labels is not None:
        check_texts(body.labels, settings, "labels")
    images = await decode_images(body.images, settings, model_input_side(state))
    variant = await state.registry.variant(tenant, body.alpha)

    if body.labels is not None:
        labels = body.labels
        head = await state.registry.encode_labels(variant, labels)
    elif variant.head is not None:
        labels, head = variant.labels, variant.head
    else:
        raise APIError(
            400,
            "labels_required",
            f"tenant {tenant!r} has no labels in its adapter; pass labels=[...] in the request.",
        )

    image_embeddings = await encode_images(state, variant, images)
    logits = state.backbone.logit_scale * image_embeddings @ head.T  # (N, L)
    probabilities = logits.softmax(dim=-1)
    top = probabilities.topk(min(body.top_k, len(labels)), dim=-1)

    results = [
        [LabelScore(label=labels[i], probability=float(p)) for p, i in zip(values, indices, strict=True)]
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
    return ClassifyResponse(
        tenant=tenant,
        version=variant.version,
        alpha=variant.alpha,
        results=results,
        truncated_texts=truncated_prompts(state, labels, variant.templates),
    )
