"""API keys and tenant isolation, input limits, and decoding of every awkward image kind."""

from __future__ import annotations

import base64
import io
import logging
import warnings

import numpy as np
import pytest
from PIL import Image

from service.errors import APIError
from service.images import MAX_REQUEST_PIXELS, decode_image
from tests.service.conftest import TENANT_KEYS, auth, png_bytes


def encode(image: Image.Image, format: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **kwargs)
    return buffer.getvalue()


def classify(client, data: bytes, tenant="acme"):
    return client.post(
        f"/v1/tenants/{tenant}/classify", headers=auth(tenant), files=[("images", ("x", data))]
    )


# --- auth and isolation ---


def test_missing_key_is_401(client):
    response = client.post("/v1/tenants/acme/embed", json={"texts": ["x"]})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_tenant_key_cannot_reach_other_tenant(client):
    response = client.post("/v1/tenants/globex/embed", headers=auth("acme"), json={"texts": ["x"]})
    assert response.status_code == 401
    assert (
        client.post("/v1/tenants/acme/embed", headers=auth("acme"), json={"texts": ["x"]}).status_code == 200
    )


def test_x_api_key_header_accepted(client):
    headers = {"X-API-Key": TENANT_KEYS["globex"]}
    assert client.post("/v1/tenants/globex/embed", headers=headers, json={"texts": ["x"]}).status_code == 200


@pytest.mark.parametrize("tenant", ["..", "ACME", "a" * 80, "acme%2F..%2Fglobex", ".hidden"])
def test_invalid_tenant_ids_rejected(client, tenant):
    response = client.post(f"/v1/tenants/{tenant}/embed", headers=auth("acme"), json={"texts": ["x"]})
    assert 400 <= response.status_code < 500


def test_keys_and_images_never_logged(client, caplog):
    caplog.set_level(logging.DEBUG)
    image = png_bytes()
    client.post(
        "/v1/tenants/acme/embed", headers=auth("acme"), json={"images": [base64.b64encode(image).decode()]}
    )
    client.post("/v1/tenants/acme/embed", headers={"Authorization": "Bearer wrong-key-123456789"}, json={})
    for record in caplog.records:
        message = record.getMessage()
        assert TENANT_KEYS["acme"] not in message
        assert "wrong-key" not in message
        assert base64.b64encode(image).decode()[:40] not in message


# --- limits ---


def test_body_limit_413(store, backbone_file):
    from fastapi.testclient import TestClient

    from service.main import create_app
    from tests.service.conftest import make_settings

    with TestClient(create_app(make_settings(store, backbone_file[0], max_body_bytes=2048))) as client:
        response = classify(client, b"\0" * 5000)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"


def test_too_many_images_413(client):
    files = [("images", (f"{i}.png", png_bytes())) for i in range(17)]
    response = client.post("/v1/tenants/acme/classify", headers=auth("acme"), files=files)
    assert response.status_code == 413


def test_too_many_and_too_long_texts(client):
    assert (
        client.post("/v1/tenants/acme/embed", headers=auth("acme"), json={"texts": ["x"] * 300}).status_code
        == 413
    )
    response = client.post("/v1/tenants/acme/embed", headers=auth("acme"), json={"texts": ["x" * 2000]})
    assert response.status_code == 413
    assert "RADAPTER_MAX_TEXT_CHARS" in response.json()["error"]["message"]


def test_unsupported_content_type_415(client):
    response = client.post(
        "/v1/tenants/acme/embed",
        headers=auth("acme"),
        content=b"x",
    )
    assert response.status_code == 415


def test_bad_base64_422(client):
    response = client.post("/v1/tenants/acme/classify", headers=auth("acme"), json={"images": ["***"]})
    assert response.status_code == 422
    assert "images.0" in response.json()["error"]["message"]


# --- decoding ---


def gradient(mode="RGB", size=(37, 23)) -> Image.Image:
    array = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3).astype(np.uint8)
    return Image.fromarray(array, "RGB").convert(mode) if mode != "RGB" else Image.fromarray(array, "RGB")


def awkward_images() -> dict[str, bytes]:
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    gray16 = Image.fromarray(np.full((10, 12), 65535, dtype=np.uint16))
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 255, 0))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    exif_image = Image.new("RGB", (30, 10), (0, 0, 255))
    exif = exif_image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    return {
        "jpeg": encode(gradient(), "JPEG"),
        "png": encode(gradient(), "PNG"),
        "webp": encode(gradient(), "WEBP"),
        "gif_animated": gif.getvalue(),
        "bmp": encode(gradient(), "BMP"),
        "tiff": encode(gradient(), "TIFF"),
        "jpeg_exif": encode(exif_image, "JPEG", exif=exif),
        "rgba_transparent": encode(rgba, "PNG"),
        "palette_transparent": encode(palette, "PNG"),
        "gray16": encode(gray16, "PNG"),
        "grayscale": encode(gradient("L"), "PNG"),
        "cmyk_jpeg": encode(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"),
        "cmyk_tiff": encode(Image.new("CMYK", (20, 20), (0, 0, 0, 0)), "TIFF"),
    }


@pytest.mark.parametrize("kind", sorted(awkward_images()))
def test_awkward_image_classifies(client, kind):
    response = classify(client, awkward_images()[kind])
    assert response.status_code == 200, response.text


def test_decode_conversions():
    images = awkward_images()
    assert decode_image(images["jpeg_exif"], 0, 10**6).size == (10, 30)  # EXIF rotation applied
    assert decode_image(images["rgba_transparent"], 0, 10**6).getpixel((5, 5)) == (255, 255, 255)
    assert decode_image(images["palette_transparent"], 0, 10**6).getpixel((5, 5)) == (255, 255, 255)
    assert decode_image(images["gray16"], 0, 10**6).getpixel((0, 0)) == (255, 255, 255)
    red = decode_image(images["cmyk_jpeg"], 0, 10**6).getpixel((10, 10))
    assert red[0] > 200
    assert red[1] < 60
    assert red[2] < 60
    assert decode_image(images["cmyk_tiff"], 0, 10**6).getpixel((1, 1)) == (255, 255, 255)
    assert decode_image(images["gif_animated"], 0, 10**6).getpixel((1, 1)) == (255, 0, 0)  # first frame


@pytest.mark.parametrize(
    "name, data, status",
    [
        ("zero_bytes", b"", 400),
        ("not_an_image", b"%PDF-1.4 definitely not an image", 400),
        ("truncated_png", None, 400),
        ("truncated_jpeg", None, 400),
    ],
)
def test_broken_images_are_4xx(client, name, data, status):
    if name == "truncated_png":
        data = encode(gradient(size=(200, 200)), "PNG")[:300]
    if name == "truncated_jpeg":
        data = encode(gradient(size=(200, 200)), "JPEG")[:400]
    response = classify(client, data)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "invalid_image"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width x height` RGB pixels, with no pixel data at all."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [7000, 30000])  # over our 40 MP limit; over Pillow's own bomb limit
def test_decompression_bomb_rejected_from_header(client, side):
    response = classify(client, png_header_only(side, side))
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "image_too_large"
    assert "RADAPTER_MAX_IMAGE_PIXELS" in error["message"]
    assert "decompression bomb" not in error["message"].lower()


def test_pixel_limit_above_pillow_default_applies():
    # 100 M pixels is over Pillow's default bomb limit and under ours, so the header must pass and the
    # missing pixel data be reported as truncated. Warnings are errors here because a server thread
    # can run while another thread's catch_warnings has made them errors.
    with warnings.catch_warnings(), pytest.raises(APIError) as raised:
        warnings.simplefilter("error")
        decode_image(png_header_only(10_000, 10_000), 0, 200_000_000)
    assert raised.value.status == 400
    assert raised.value.code == "invalid_image"


def test_unsupported_format_415(client):
    data = encode(gradient(), "ICO")
    assert classify(client, data).status_code == 415


def test_body_limit_413_for_chunked_body(store, backbone_file):
    from fastapi.testclient import TestClient

    from service.main import create_app
    from tests.service.conftest import make_settings

    def chunks():
        for _ in range(5):
            yield b"\0" * 1000

    settings = make_settings(store, backbone_file[0], max_body_bytes=2048)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        headers = {**auth("acme"), "Content-Type": "application/json"}
        response = client.post("/v1/tenants/acme/embed", headers=headers, content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert "RADAPTER_MAX_BODY_BYTES" in error["message"]


def test_request_pixel_budget_413(client):
    # Four 36 M pixel headers: each under the per-image limit, together over the per-request budget.
    # The headers carry no pixel data, so a 413 shows the budget is checked before any decoding.
    files = [("images", (f"{i}.png", png_header_only(6000, 6000))) for i in range(4)]
    response = client.post("/v1/tenants/acme/classify", headers=auth("acme"), files=files)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "images_too_large"
    assert str(MAX_REQUEST_PIXELS) in error["message"]


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_large_image_decoded_reduced(format):
    data = encode(gradient(size=(2000, 1500)), format)
    image = decode_image(data, 0, 10**8, min_side=224)
    assert min(image.size) >= 224
    assert max(image.size) <= 1000
    assert image.mode == "RGB"
    assert decode_image(data, 0, 10**8).size == (2000, 1500)
