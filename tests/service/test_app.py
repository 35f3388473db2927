"""Settings, startup, health, metrics and the error shape, through the real app and lifespan."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.main import create_app
from service.settings import Settings
from tests.service.conftest import TINY, auth, make_settings, png_bytes
from training import embedded


def test_settings_missing_backbone_names_variable(tmp_path, monkeypatch):
    # Without RADAPTER_BACKBONE_ARCH the embedded backbone is served; its weights are absent here.
    monkeypatch.delenv("RADAPTER_BACKBONE_ARCH", raising=False)
    monkeypatch.setattr(embedded, "WEIGHTS_PATH", tmp_path / "absent.safetensors")
    app = create_app(Settings(adapter_store=tmp_path, demo_tenants=False))
    with pytest.raises(FileNotFoundError, match="RADAPTER_BACKBONE_ARCH"):
        with TestClient(app):
            pass


def test_settings_from_environment_and_toml(tmp_path, monkeypatch):
    config = tmp_path / "service.toml"
    config.write_text('backbone_arch = "ViT-B-16"\nmax_images = 3\n')
    monkeypatch.setenv("RADAPTER_CONFIG_FILE", str(config))
    monkeypatch.setenv("RADAPTER_MAX_IMAGES", "7")
    settings = Settings()
    assert settings.backbone_arch == "ViT-B-16"
    assert settings.max_images == 7  # the environment wins over the file


def test_settings_reject_placeholder_key():
    with pytest.raises(ValidationError, match="RADAPTER_ADMIN_API_KEY"):
        Settings(admin_api_key="changeme")


def test_settings_reject_half_precision_on_cpu():
    with pytest.raises(ValidationError, match="CUDA"):
        Settings(precision="float16", device="cpu")


def test_settings_reject_bad_tenant_id_in_keys():
    with pytest.raises(ValidationError, match="tenant id"):
        Settings(tenant_api_keys={"../etc": "x" * 32})


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["backbone"] == TINY
    assert ready.json()["provider"].startswith("cpu")
    assert ready.json()["tenants"] == 2


def test_readiness_fails_when_worker_dead(client):
    service = client.app.state.service
    service.worker._task.cancel()
    import time

    time.sleep(0.05)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["worker_alive"] is False


def test_metrics_count_requests_and_batches(client):
    client.post("/v1/tenants/acme/classify", headers=auth("acme"), files=[("images", ("a.png", png_bytes()))])
    text = client.get("/metrics").text
    assert 'radapter_requests_total{route="/v1/tenants/{tenant}/classify",status="200",tenant="acme"}' in text
    assert 'radapter_batch_size_count{kind="image",tenant="acme"}' in text
    assert "radapter_queue_depth" in text
    assert "radapter_overlay_cache_hits_total" in text
    assert 'radapter_swaps_total{outcome="ok",tenant="acme"}' in text


def test_unknown_route_uses_error_shape(client):
    response = client.get("/v1/nothing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"code", "message"}


def test_internal_error_hides_details(client, monkeypatch):
    service = client.app.state.service

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service.backend, "encode_image", explode)
    response = client.post(
        "/v1/tenants/acme/classify", headers=auth("acme"), files=[("images", ("a.png", png_bytes()))]
    )
    assert response.status_code == 500
    body = response.json()["error"]
    assert body["code"] == "internal_error"
    assert "secret" not in body["message"]
    assert response.headers["X-Request-ID"] in body["message"]


def test_openapi_documents_routes(client):
    schema = client.get("/openapi.json").json()
    for path in (
        "/v1/tenants/{tenant}/classify",
        "/v1/tenants/{tenant}/embed",
        "/v1/admin/tenants/{tenant}/adapter",
    ):
        assert path in schema["paths"]
    body = schema["paths"]["/v1/tenants/{tenant}/classify"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "ClassifyRequest" in schema["components"]["schemas"]


def test_store_tenant_with_bad_adapter_is_skipped(store, backbone_file, adapter_sources):
    import shutil

    shutil.copytree(adapter_sources["wrong-base"], store / "initech" / "v1")
    (store / "initech" / "ACTIVE").write_text("v1\n")
    with TestClient(create_app(make_settings(store, backbone_file[0]))) as client:
        assert client.get("/readyz").json()["tenants"] == 2
