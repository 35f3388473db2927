"""Classify and embed: results equal the merged checkpoint's, and a mixed batch equals each tenant alone."""

from __future__ import annotations

import base64
import math
from concurrent.futures import ThreadPoolExecutor

import open_clip
import pytest
import torch
import torch.nn.functional as F

from service.images import decode_image
from tests.service.conftest import TINY, auth, make_tiny_model, png_bytes
from training.radapter import (
    RAdapterConfig,
    inject_adapters,
    load_adapter,
    load_adapter_state_dict,
    merged_state_dict,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def merged_model(source, alpha: float) -> torch.nn.Module:
    """A fresh plain open_clip model holding the adapter merged at `alpha`, as `radapter merge` writes it."""
    tensors, metadata = load_adapter(source)
    adapted = make_tiny_model(TINY, seed=0)
    inject_adapters(adapted, RAdapterConfig.from_dict(metadata.config.to_dict()))
    load_adapter_state_dict(adapted, tensors)
    plain = make_tiny_model(TINY, seed=5)  # different init, so every weight must come from the merge
    plain.load_state_dict(merged_state_dict(adapted.eval(), alpha), strict=True)
    return plain.eval()


def embed(client, tenant, **body):
    response = client.post(f"/v1/tenants/{tenant}/embed", headers=auth(tenant), json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_embed_equals_merged_checkpoint(client, adapter_sources):
    image = png_bytes((10, 200, 90), size=(50, 40))
    body = embed(client, "acme", images=[b64(image)], texts=["a photo of a fox"])
    model = merged_model(adapter_sources["acme-v1"], alpha=0.5)
    service = client.app.state.service
    with torch.no_grad():
        pixels = service.backbone.pixels([decode_image(image, 0, 10**7)])
        expected_image = F.normalize(model.encode_image(pixels), dim=-1)
        ids = open_clip.get_tokenizer(TINY)(["a photo of a fox"])
        expected_text = F.normalize(model.encode_text(ids), dim=-1)
    # float32 on CPU; only summation order differs between the overlay call and the merged model.
    torch.testing.assert_close(torch.tensor(body["image_embeddings"]), expected_image, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(body["text_embeddings"]), expected_text, rtol=1e-4, atol=1e-5)


def test_alpha_override_changes_output_and_zero_is_base(client):
    text = {"texts": ["a red fox"]}
    default = embed(client, "acme", **text)["text_embeddings"][0]
    override = embed(client, "acme", alpha=0.9, **text)
    assert override["alpha"] == 0.9
    assert override["text_embeddings"][0] != default
    base = make_tiny_model(TINY, seed=0)
    with torch.no_grad():
        expected = F.normalize(base.encode_text(open_clip.get_tokenizer(TINY)(["a red fox"])), dim=-1)
    torch.testing.assert_close(
        torch.tensor(embed(client, "acme", alpha=0.0, **text)["text_embeddings"]),
        expected,
        rtol=1e-4,
        atol=1e-5,
    )


def test_tenants_differ(client):
    acme = embed(client, "acme", texts=["a cat"])["text_embeddings"]
    globex = embed(client, "globex", texts=["a cat"])["text_embeddings"]
    assert acme != globex


def test_mixed_batch_equals_each_tenant_alone(client):
    texts = ["a cat", "a dog on grass", "a fox"]
    alone = {tenant: embed(client, tenant, texts=texts)["text_embeddings"] for tenant in ("acme", "globex")}
    service = client.app.state.service
    service.worker.max_wait_s = 0.2  # hold the batch open so both tenants' calls are queued together
    with ThreadPoolExecutor(6) as pool:
        futures = [
            (tenant, pool.submit(embed, client, tenant, texts=texts)) for tenant in ("acme", "globex") * 3
        ]
        for tenant, future in futures:
            torch.testing.assert_close(
                torch.tensor(future.result()["text_embeddings"]), torch.tensor(alone[tenant])
            )
    text = client.get("/metrics").text
    batched = [
        line
        for line in text.splitlines()
        if line.startswith('radapter_batch_size_bucket{kind="text",le="1.0"')
    ]
    assert batched  # the histogram exists; rows per call were recorded


def test_classify_with_request_labels_and_top_k(client):
    response = client.post(
        "/v1/tenants/acme/classify",
        headers=auth("acme"),
        json={"images": [b64(png_bytes())], "labels": ["red", "green", "blue"], "top_k": 2},
    )
    assert response.status_code == 200
    scores = response.json()["results"][0]
    assert len(scores) == 2
    assert scores[0]["probability"] >= scores[1]["probability"]
    assert {s["label"] for s in scores} <= {"red", "green", "blue"}


def test_classify_empty_labels_rejected(client):
    image = b64(png_bytes())
    response = client.post(
        "/v1/tenants/acme/classify", headers=auth("acme"), json={"images": [image], "labels": []}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "labels" in error["message"]


def test_classify_probabilities_match_merged_model(client, adapter_sources):
    image = png_bytes((120, 40, 200))
    response = client.post(
        "/v1/tenants/acme/classify", headers=auth("acme"), json={"images": [b64(image)], "top_k": 3}
    )
    got = {s["label"]: s["probability"] for s in response.json()["results"][0]}
    model = merged_model(adapter_sources["acme-v1"], alpha=0.5)
    service = client.app.state.service
    tokenizer = open_clip.get_tokenizer(TINY)
    with torch.no_grad():
        labels = ["cat", "dog", "fox"]
        prompts = [t.replace("{}", label) for label in labels for t in ("a photo of a {}.", "a {}")]
        text = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1).reshape(3, 2, -1).mean(1)
        head = F.normalize(text, dim=-1)
        image_embedding = F.normalize(
            model.encode_image(service.backbone.pixels([decode_image(image, 0, 10**7)])), dim=-1
        )
        expected = (model.logit_scale.exp() * image_embedding @ head.T).softmax(-1)[0]
    torch.testing.assert_close(torch.tensor([got[label] for label in labels]), expected, rtol=1e-4, atol=1e-5)


def test_embed_reports_truncated_text(client):
    body = embed(client, "acme", texts=["short", "word " * 50])
    assert body["truncated_texts"] == [1]


def test_embed_requires_input(client):
    response = client.post("/v1/tenants/acme/embed", headers=auth("acme"), json={})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty_request"


def test_alpha_out_of_range_rejected(client):
    response = client.post(
        "/v1/tenants/acme/embed", headers=auth("acme"), json={"texts": ["x"], "alpha": 1.5}
    )
    assert response.status_code == 422
    assert "alpha" in response.json()["error"]["message"]


@pytest.mark.parametrize("alpha", ["0.5", True, [0.5]])
def test_alpha_wrong_json_type_rejected(client, alpha):
    response = client.post(
        "/v1/tenants/acme/embed", headers=auth("acme"), json={"texts": ["x"], "alpha": alpha}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "alpha" in error["message"]


def test_alpha_multipart_string_accepted(client):
    response = client.post(
        "/v1/tenants/acme/classify",
        headers=auth("acme"),
        files=[("images", ("x.png", png_bytes()))],
        data={"alpha": "0.25"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["alpha"] == 0.25


def test_alpha_quantized_to_grid(client):
    first = embed(client, "acme", texts=["a red fox"], alpha=0.31)
    second = embed(client, "acme", texts=["a red fox"], alpha=0.3100001)
    negative_zero = embed(client, "acme", texts=["a red fox"], alpha=-0.0)
    assert first["alpha"] == 0.31
    assert second["alpha"] == 0.31
    assert second["text_embeddings"] == first["text_embeddings"]
    assert math.copysign(1.0, negative_zero["alpha"]) == 1.0

    cache = client.app.state.service.cache
    assert sorted(key[2] for key in cache.keys("acme")) == [0.0, 0.31, 0.5]


def test_request_alpha_variants_bounded_per_tenant(client):
    from service.registry import MAX_REQUEST_ALPHA_VARIANTS

    embed(client, "globex", texts=["x"])
    alphas = [round(0.1 + 0.05 * i, 2) for i in range(MAX_REQUEST_ALPHA_VARIANTS + 3)]
    for alpha in alphas:
        assert embed(client, "acme", texts=["x"], alpha=alpha)["alpha"] == alpha

    cache = client.app.state.service.cache
    acme_alphas = [key[2] for key in cache.keys("acme")]
    assert 0.5 in acme_alphas  # the default alpha's variant is never trimmed
    assert sorted(alpha for alpha in acme_alphas if alpha != 0.5) == alphas[-MAX_REQUEST_ALPHA_VARIANTS:]
    assert cache.keys("globex") == [("globex", "v1", 0.8)]


def test_queue_full_returns_429(store, backbone_file):
    from fastapi.testclient import TestClient

    from service.main import create_app
    from tests.service.conftest import make_settings

    settings = make_settings(store, backbone_file[0], queue_size=1, max_batch_size=1, max_wait_ms=200)
    with TestClient(create_app(settings)) as client:
        body = {"texts": ["a", "b", "c", "d"]}  # four one-row calls cannot fit a one-slot queue
        response = client.post("/v1/tenants/acme/embed", headers=auth("acme"), json=body)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert "radapter_rejected_total 1.0" in client.get("/metrics").text
