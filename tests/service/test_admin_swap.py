"""Admin routes and hot-swap: validation before change, atomic swap, memory released afterwards."""

from __future__ import annotations

import gc
import weakref
from concurrent.futures import ThreadPoolExecutor

from tests.service.conftest import ADMIN, auth, png_bytes

IMAGE = [("images", ("a.png", png_bytes()))]


def upload(client, tenant, source, version, activate=True):
    files = {
        "weights": ("adapter.safetensors", (source / "adapter.safetensors").read_bytes()),
        "metadata": ("adapter.json", (source / "adapter.json").read_bytes()),
    }
    data = {"version": version, "activate": str(activate).lower()}
    return client.put(f"/v1/admin/tenants/{tenant}/adapter", headers=ADMIN, files=files, data=data)


def classify_version(client, tenant="acme"):
    response = client.post(f"/v1/tenants/{tenant}/classify", headers=auth(tenant), files=IMAGE)
    assert response.status_code == 200, response.text
    return response.json()["version"]


def test_admin_requires_admin_key(client):
    assert client.get("/v1/admin/tenants").status_code == 401
    assert client.get("/v1/admin/tenants", headers=auth("acme")).status_code == 401
    assert client.get("/v1/admin/tenants", headers=ADMIN).status_code == 200


def test_upload_activates_new_version(client, adapter_sources, store):
    response = upload(client, "acme", adapter_sources["acme-v2"], "v2")
    assert response.status_code == 201, response.text
    assert response.json()["active_version"] == "v2"
    assert (store / "acme" / "ACTIVE").read_text().strip() == "v2"
    assert classify_version(client) == "v2"


def test_upload_new_tenant(client, adapter_sources):
    response = upload(client, "initech", adapter_sources["acme-v1"], "v1")
    assert response.status_code == 201
    info = client.get("/v1/admin/tenants/initech/adapter", headers=ADMIN).json()
    assert info["active_version"] == "v1"
    assert info["labels"] == ["cat", "dog", "fox"]


def test_rejected_upload_keeps_previous_version(client, adapter_sources, store):
    response = upload(client, "acme", adapter_sources["wrong-base"], "v9")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "base_mismatch"
    assert "sha256" in response.json()["error"]["message"]
    assert not (store / "acme" / "v9").exists()
    assert (store / "acme" / "ACTIVE").read_text().strip() == "v1"
    assert classify_version(client) == "v1"


def test_corrupt_upload_rejected(client, adapter_sources):
    files = {
        "weights": ("adapter.safetensors", b"\x80\x04pickle-bytes-not-safetensors"),
        "metadata": ("adapter.json", (adapter_sources["acme-v1"] / "adapter.json").read_bytes()),
    }
    response = client.put(
        "/v1/admin/tenants/acme/adapter", headers=ADMIN, files=files, data={"version": "v3"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_adapter"
    assert classify_version(client) == "v1"


def test_upload_errors_name_part_not_path(client, adapter_sources, store):
    good = adapter_sources["acme-v1"]
    cases = {
        "weights": (b"\x80\x04pickle-bytes-not-safetensors", (good / "adapter.json").read_bytes()),
        "metadata": ((good / "adapter.safetensors").read_bytes(), b"{not json"),
    }
    for part, (weights, metadata) in cases.items():
        files = {"weights": ("adapter.safetensors", weights), "metadata": ("adapter.json", metadata)}
        response = client.put(
            "/v1/admin/tenants/acme/adapter", headers=ADMIN, files=files, data={"version": "v3"}
        )
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert f"'{part}'" in message
        assert ".incoming" not in message
        assert str(store) not in message


def test_non_finite_adapter_rejected(client, adapter_sources, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(adapter_sources["acme-v1"] / "adapter.safetensors"))
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone().fill_(float("nan"))
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    files = {
        "weights": ("adapter.safetensors", (tmp_path / "bad.safetensors").read_bytes()),
        "metadata": ("adapter.json", (adapter_sources["acme-v1"] / "adapter.json").read_bytes()),
    }
    response = client.put(
        "/v1/admin/tenants/acme/adapter", headers=ADMIN, files=files, data={"version": "v4"}
    )
    assert response.status_code == 400
    assert "finite" in response.json()["error"]["message"]


def test_duplicate_version_conflicts(client, adapter_sources):
    assert upload(client, "acme", adapter_sources["acme-v1"], "v1").status_code == 409


def test_invalid_ids_rejected(client, adapter_sources):
    assert upload(client, "acme", adapter_sources["acme-v1"], "../x").status_code == 400
    assert client.get("/v1/admin/tenants/..%2Fetc/adapter", headers=ADMIN).status_code in (400, 404)
    assert client.get("/v1/admin/tenants/Acme/adapter", headers=ADMIN).status_code == 400


def test_activate_rollback_and_delete(client, adapter_sources):
    assert upload(client, "acme", adapter_sources["acme-v2"], "v2").status_code == 201
    response = client.put("/v1/admin/tenants/acme/adapter/active", headers=ADMIN, json={"version": "v1"})
    assert response.status_code == 200
    assert classify_version(client) == "v1"
    assert client.delete("/v1/admin/tenants/acme/adapter/versions/v1", headers=ADMIN).status_code == 409
    assert client.delete("/v1/admin/tenants/acme/adapter/versions/v2", headers=ADMIN).status_code == 204
    assert client.delete("/v1/admin/tenants/acme/adapter", headers=ADMIN).status_code == 204
    response = client.post("/v1/tenants/acme/classify", headers=auth("acme"), files=IMAGE)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "tenant_not_found"


def test_swap_under_concurrent_requests_has_no_failures(client, adapter_sources):
    upload(client, "acme", adapter_sources["acme-v2"], "v2", activate=False)

    def hammer(_):
        return [
            client.post("/v1/tenants/acme/classify", headers=auth("acme"), files=IMAGE) for _ in range(15)
        ]

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer, i) for i in range(4)]
        for index in range(6):
            version = "v2" if index % 2 == 0 else "v1"
            response = client.put(
                "/v1/admin/tenants/acme/adapter/active", headers=ADMIN, json={"version": version}
            )
            assert response.status_code == 200
        responses = [r for future in futures for r in future.result()]
    statuses = {r.status_code for r in responses}
    assert statuses == {200}, [r.text for r in responses if r.status_code != 200][:3]
    assert {r.json()["version"] for r in responses} <= {"v1", "v2"}


def test_old_version_memory_released_after_swap(client, adapter_sources):
    registry = client.app.state.service.registry
    classify_version(client)
    old = weakref.ref(registry.cache.get(("acme", "v1", 0.5)))
    old_adapter = weakref.ref(registry.tenants()["acme"])
    assert upload(client, "acme", adapter_sources["acme-v2"], "v2").status_code == 201
    classify_version(client)
    gc.collect()
    assert old() is None
    assert old_adapter() is None
    assert all(key[1] == "v2" for key in registry.cache._entries if key[0] == "acme")


def test_cache_evicts_by_bytes(store, backbone_file):
    from fastapi.testclient import TestClient

    from service.main import create_app
    from tests.service.conftest import make_settings

    with TestClient(create_app(make_settings(store, backbone_file[0], overlay_cache_bytes=1))) as client:
        service = client.app.state.service
        assert len(service.cache._entries) == 1  # only the newest variant survives a 1-byte bound
        for tenant in ("acme", "globex", "acme"):
            assert (
                client.post(f"/v1/tenants/{tenant}/classify", headers=auth(tenant), files=IMAGE).status_code
                == 200
            )
        text = client.get("/metrics").text
        assert "radapter_overlay_cache_evictions_total" in text
        assert 'radapter_overlay_cache_misses_total{tenant="acme"}' in text
