"""Segmentation: label map, fractions and overlay from dense patch-text logits."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tests.service.conftest import TINY, auth, make_tiny_model, png_bytes


def test_segment_returns_label_map_fractions_and_overlay(client):
    image = png_bytes((30, 160, 40), size=(45, 27))
    response = client.post(
        "/v1/tenants/acme/segment",
        headers=auth("acme"),
        files=[("image", ("a.png", image))],
        data={"classes": ["grass", "sky"], "overlay": "true"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    label_map = np.array(Image.open(io.BytesIO(base64.b64decode(body["label_map_png"]))))
    assert label_map.shape == (27, 45)
    assert set(np.unique(label_map)) <= {0, 1}
    assert abs(sum(body["fractions"].values()) - 1.0) < 1e-6
    assert abs(body["fractions"]["grass"] - float((label_map == 0).mean())) < 1e-6
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.size == (45, 27)
    assert overlay.mode == "RGB"


def test_segment_dense_tokens_match_pooled_path(client):
    # The class token through the same ln_post and proj must reproduce encode_image exactly, which
    # checks that the dense path runs the same layers as the pooled one.
    service = client.app.state.service
    model = make_tiny_model(TINY, seed=0)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        visual = model.visual
        tokens = visual.ln_post(visual.transformer(visual._embeds(pixels)))
        torch.testing.assert_close(tokens[:, 0] @ visual.proj, model.encode_image(pixels))
        dense = service.backend.encode_dense({}, pixels)
        expected = F.normalize(tokens[:, 1:] @ visual.proj, dim=-1).reshape(1, 4, 4, -1)
    torch.testing.assert_close(dense, expected)


def test_segment_needs_classes(client):
    response = client.post(
        "/v1/tenants/acme/segment",
        headers=auth("acme"),
        json={"image": base64.b64encode(png_bytes()).decode(), "classes": []},
    )
    assert response.status_code == 422
