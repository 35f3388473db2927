"""Request and response bodies; image fields take base64 in JSON and files in multipart."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema


def _image_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):  # a multipart file, already raw
        return value
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    if value.startswith("data:") and "," in value:  # accept data URLs: data:image/png;base64,....
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise ValueError(f"not valid base64 ({error}); encode the file with standard base64") from error


ImageBytes = Annotated[
    bytes,
    BeforeValidator(_image_bytes),
    WithJsonSchema(
        {"type": "string", "format": "byte", "description": "base64-encoded image file (or data URL)"}
    ),
]
Alpha = Annotated[
    float | None,
    Field(
        None,
        ge=0.0,
        le=1.0,
        description="re-scaling factor overriding the adapter's default (0 = base model)",
    ),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifyRequest(StrictModel):
    images: list[ImageBytes] = Field(..., min_length=1, description="images to classify")
    labels: list[str] | None = Field(
        None,
        min_length=1,
        description="label names; default: the tenant adapter's labels. At most RADAPTER_MAX_TEXTS.",
    )
    top_k: int = Field(5, ge=1, le=1000, description="labels returned per image")
    alpha: Alpha = None


class LabelScore(BaseModel):
    label: str
    probability: float


class ClassifyResponse(BaseModel):
    tenant: str
    version: str
    alpha: float
    results: list[list[LabelScore]] = Field(description="per image, the top-k labels by probability")
    truncated_texts: list[int] = Field(
        default_factory=list, description="label prompts cut to the context length"
    )


class EmbedRequest(StrictModel):
    images: list[ImageBytes] = Field(default_factory=list)
    texts: list[str] = Field(default_factory=list)
    alpha: Alpha = None


class EmbedResponse(BaseModel):
    tenant: str
    version: str
    alpha: float
    image_embeddings: list[list[float]] = Field(description="L2-normalised, one row per image")
    text_embeddings: list[list[float]] = Field(description="L2-normalised, one row per text")
    truncated_texts: list[int] = Field(
        default_factory=list, description="indices of texts cut to the model's context length before encoding"
    )


class RetrieveRequest(StrictModel):
    query_text: str | None = None
    query_image: ImageBytes | None = None
    candidate_texts: list[str] | None = Field(None, description="rank these texts (image or text query)")
    candidate_images: list[ImageBytes] | None = Field(None, description="rank these images")
    top_k: int = Field(10, ge=1, le=10_000)
    alpha: Alpha = None


class RetrieveHit(BaseModel):
    index: int | None = Field(None, description="position among the request's candidates")
    id: str | None = Field(None, description="gallery item id when ranking the gallery")
    score: float = Field(description="cosine similarity")
    metadata: dict[str, Any] | None = None


class RetrieveResponse(BaseModel):
    tenant: str
    version: str
    alpha: float
    source: str = Field(description="'candidates' or 'gallery'")
    hits: list[RetrieveHit]
    truncated_texts: list[int] = Field(default_factory=list)


class SegmentRequest(StrictModel):
    image: ImageBytes
    classes: list[str] = Field(
        ..., min_length=1, description="class names; pixel value i in the label map is class i"
    )
    overlay: bool = Field(False, description="also return a colour overlay PNG")
    alpha: Alpha = None


class SegmentResponse(BaseModel):
    tenant: str
    version: str
    alpha: float
    width: int
    height: int
    classes: list[str]
    label_map_png: str = Field(description="base64 8-bit grayscale PNG; pixel value = class index")
    fractions: dict[str, float] = Field(description="share of pixels assigned to each class")
    overlay_png: str | None = Field(None, description="base64 RGB PNG: the image blended with class colours")
    truncated_texts: list[int] = Field(default_factory=list)


class GalleryItemIn(StrictModel):
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="default: random")
    text: str | None = None
    image: ImageBytes | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class GalleryAddRequest(StrictModel):
    items: list[GalleryItemIn] = Field(..., min_length=1)


class GalleryItemOut(BaseModel):
    id: str
    kind: str = Field(description="'text' or 'image'")
    text: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class GalleryList(BaseModel):
    tenant: str
    items: list[GalleryItemOut]


class AdapterVersionInfo(BaseModel):
    version: str
    active: bool


class TenantAdapterInfo(BaseModel):
    tenant: str
    active_version: str | None
    versions: list[AdapterVersionInfo]
    default_alpha: float | None = None
    task: str | None = None
    labels: list[str] = Field(default_factory=list)
    base_architecture: str | None = None


class ActivateRequest(StrictModel):
    version: str = Field(description="a version already in the store")


class TenantList(BaseModel):
    tenants: list[TenantAdapterInfo]
