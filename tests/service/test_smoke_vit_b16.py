"""Smoke test of the service path on a full-size random-init ViT-B-16 (no pretrained weights needed)."""

from __future__ import annotations

import base64

import open_clip
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from helpers import perturb_adapters, save_weights

from service.images import decode_image
from service.main import create_app
from service.settings import Settings
from tests.service.conftest import ADMIN_KEY, TENANT_KEYS, auth, png_bytes
from training.models import weights_sha256
from training.radapter import (
    AdapterMetadata,
    RAdapterConfig,
    adapter_state_dict,
    inject_adapters,
    save_adapter,
    set_alpha,
)

ARCH = "ViT-B-16"
LABELS = ["cat", "dog", "fox", "car"]


@pytest.mark.slow
def test_vit_b16_classify_and_embed(tmp_path):
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH).eval()
    weights = save_weights(model, tmp_path / "vit-b-16.safetensors")
    sha256 = weights_sha256(model.state_dict())

    config = RAdapterConfig(alpha=0.5)  # full rank, the R-Adapter default
    inject_adapters(model, config)
    perturb_adapters(model, std=0.02, seed=1)
    metadata = AdapterMetadata(
        base_architecture=ARCH,
        base_weights_sha256=sha256,
        config=config,
        task="classification",
        labels=LABELS,
        templates=["a photo of a {}."],
    )
    store = tmp_path / "store"
    save_adapter(store / "acme" / "v1", adapter_state_dict(model), metadata)
    (store / "acme" / "ACTIVE").write_text("v1\n")

    settings = Settings(
        backbone_arch=ARCH,
        backbone_pretrained=str(weights),
        adapter_store=store,
        admin_api_key=ADMIN_KEY,
        tenant_api_keys=TENANT_KEYS,
    )
    image = png_bytes((10, 200, 90), size=(300, 200))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        images = [base64.b64encode(image).decode()]
        embed = client.post(
            "/v1/tenants/acme/embed",
            headers=auth("acme"),
            json={"images": images, "texts": ["a photo of a fox"]},
        )
        classify = client.post(
            "/v1/tenants/acme/classify", headers=auth("acme"), json={"images": images, "top_k": 4}
        )
        pixels = client.app.state.service.backbone.pixels([decode_image(image, 0, 10**7)])

    assert embed.status_code == 200, embed.text
    assert classify.status_code == 200, classify.text
    results = classify.json()["results"][0]
    assert sorted(score["label"] for score in results) == sorted(LABELS)
    assert abs(sum(score["probability"] for score in results) - 1.0) < 1e-5

    # The service merges the adapters into out_proj / c_proj; the reference runs them unmerged.
    set_alpha(model, 0.5)
    with torch.no_grad():
        expected_image = F.normalize(model.encode_image(pixels), dim=-1)
        expected_text = F.normalize(
            model.encode_text(open_clip.get_tokenizer(ARCH)(["a photo of a fox"])), dim=-1
        )
    # float32 on CPU through 12 blocks per tower: merged and unmerged differ only in summation order,
    # which leaves about 2e-7 on unit-norm embeddings (measured). 1e-4 still fails on a wrong layer or alpha.
    image_embeddings = torch.tensor(embed.json()["image_embeddings"])
    text_embeddings = torch.tensor(embed.json()["text_embeddings"])
    torch.testing.assert_close(image_embeddings, expected_image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(text_embeddings, expected_text, atol=1e-4, rtol=1e-4)
