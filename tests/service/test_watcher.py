"""The store watcher: a replica follows ACTIVE files that another process changes on disk."""

from __future__ import annotations

import os
import shutil
import time

from fastapi.testclient import TestClient

from service.main import create_app
from tests.service.conftest import auth, make_settings, png_bytes

INTERVAL_S = 0.3
# One poll interval, plus one activation (load, merge and label head of the tiny model, 10-30 ms in
# the service log on a 2-core CPU), plus slack for a CPU shared with other test runs.
DEADLINE_S = INTERVAL_S + 2.0
IMAGE = {"images": ("a.png", png_bytes())}


def served_version(client: TestClient, tenant: str) -> str | None:
    response = client.post(f"/v1/tenants/{tenant}/classify", headers=auth(tenant), files=IMAGE)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.json()["version"]


def replace_active(tenant_dir, version: str) -> None:
    """Point ACTIVE at `version` the way another replica's store does: write a temporary file, rename."""
    temporary = tenant_dir / ".ACTIVE.other-replica"
    temporary.write_text(version + "\n")
    os.replace(temporary, tenant_dir / "ACTIVE")


def wait_for_version(client: TestClient, tenant: str, expected: str | None) -> float:
    """Poll the served version until it is `expected`; return the seconds that took."""
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE_S:
        if served_version(client, tenant) == expected:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(
        f"{tenant} still serves {served_version(client, tenant)!r}, not {expected!r}, "
        f"{DEADLINE_S} s after ACTIVE changed on disk"
    )


def test_watcher_follows_active_file(store, backbone_file, adapter_sources):
    settings = make_settings(store, backbone_file[0], watch_interval_s=INTERVAL_S)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        registry = client.app.state.service.registry
        before = client.post("/v1/tenants/acme/embed", headers=auth("acme"), json={"texts": ["a fox"]})
        assert served_version(client, "acme") == "v1"

        shutil.copytree(adapter_sources["acme-v2"], store / "acme" / "v2")
        replace_active(store / "acme", "v2")
        elapsed = wait_for_version(client, "acme", "v2")
        after = client.post("/v1/tenants/acme/embed", headers=auth("acme"), json={"texts": ["a fox"]})

        assert elapsed <= DEADLINE_S
        assert registry.tenants()["acme"].version == "v2"
        assert after.json()["text_embeddings"] != before.json()["text_embeddings"]
        assert served_version(client, "globex") == "v1"  # other tenants are left alone

        replace_active(store / "acme", "v1")
        wait_for_version(client, "acme", "v1")

        (store / "acme" / "ACTIVE").unlink()
        wait_for_version(client, "acme", None)
        assert "acme" not in registry.tenants()


def test_watcher_keeps_serving_on_invalid_pointer(store, backbone_file):
    settings = make_settings(store, backbone_file[0], watch_interval_s=INTERVAL_S)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        replace_active(store / "acme", "v9")  # a version that is not in the store
        time.sleep(3 * INTERVAL_S)

        assert served_version(client, "acme") == "v1"
        assert client.app.state.service.worker.alive
        assert not client.app.state.service.background[0].done()  # the watcher survived the error


def test_watcher_survives_failing_store_read(store, backbone_file, adapter_sources, monkeypatch):
    settings = make_settings(store, backbone_file[0], watch_interval_s=INTERVAL_S)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        registry = client.app.state.service.registry
        real_tenants = registry.store.tenants
        failures = {"left": 2}

        def flaky_tenants():
            # A shared volume that drops out for two polls, as NFS mounts do.
            if failures["left"]:
                failures["left"] -= 1
                raise OSError("stale file handle")
            return real_tenants()

        monkeypatch.setattr(registry.store, "tenants", flaky_tenants)
        shutil.copytree(adapter_sources["acme-v2"], store / "acme" / "v2")
        replace_active(store / "acme", "v2")
        time.sleep(2 * INTERVAL_S)

        wait_for_version(client, "acme", "v2")
        assert failures["left"] == 0
