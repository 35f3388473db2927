"""Demo defaults: the embedded backbone, seeded demo tenants and generated keys, with tiny stand-ins.

`training.embedded` is pointed at the tiny test architecture and its weights file, and the shipped
demo-tenant folder at adapters written here, so these tests run what a plain `radapter serve` runs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from service import cli
from service import settings as settings_module
from service.demo import KEYS_FILE, prepare_demo
from service.main import create_app
from service.settings import Settings
from tests.service.conftest import ADMIN_KEY, TINY, make_adapter, png_bytes
from training import embedded
from training.cli import main

MODEL_CONFIG = Path(__file__).parents[1] / "fixtures" / "model_configs" / f"{TINY}.json"
DEMO_TENANTS = ["demo-classify", "demo-retrieve", "demo-segment"]
IMAGE = [("images", ("a.png", png_bytes()))]


def write_demo_adapter(directory: Path, sha256: str, seed: int, task: str | None) -> Path:
    labels = ["apple", "car", "dog"] if task in ("classification", "segmentation") else []
    make_adapter(directory, sha256, seed=seed, labels=labels)
    metadata_path = directory / "adapter.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["task"] = task
    metadata_path.write_text(json.dumps(metadata))
    return directory


@pytest.fixture(scope="module")
def demo_source(tmp_path_factory, backbone_file) -> Path:
    """A demo-tenant folder as the service ships it; demo-retrieve has two versions and an ACTIVE file."""
    root = tmp_path_factory.mktemp("demo_tenants")
    sha = backbone_file[1]
    write_demo_adapter(root / "demo-classify" / "v1", sha, seed=11, task="classification")
    write_demo_adapter(root / "demo-retrieve" / "v1", sha, seed=12, task="retrieval")
    write_demo_adapter(root / "demo-retrieve" / "v2", sha, seed=13, task="retrieval")
    (root / "demo-retrieve" / "ACTIVE").write_text("v2\n")
    write_demo_adapter(root / "demo-segment" / "v1", sha, seed=14, task="segmentation")
    (root / "README.md").write_text("not a tenant\n")
    (root / "__pycache__").mkdir()
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch, backbone_file, demo_source) -> Path:
    """Point the embedded backbone and demo tenants at tiny stand-ins; return the RADAPTER_CACHE folder."""
    for name in list(os.environ):
        if name.startswith("RADAPTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(embedded, "ARCHITECTURE", TINY)
    monkeypatch.setattr(embedded, "CONFIG_PATH", MODEL_CONFIG)
    monkeypatch.setattr(embedded, "WEIGHTS_PATH", backbone_file[0])
    monkeypatch.setattr(settings_module, "DEMO_TENANTS_DIR", demo_source)
    root = tmp_path / "cache"
    monkeypatch.setenv("RADAPTER_CACHE", str(root))
    return root


def read_keys(store: Path) -> dict:
    return json.loads((store / KEYS_FILE).read_text())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_defaults_resolve_to_embedded_backbone(cache, backbone_file):
    settings = Settings()
    assert settings.backbone_arch == TINY
    assert settings.backbone_pretrained == str(backbone_file[0])
    assert settings.adapter_store == cache / "store"
    assert settings.embedded_backbone
    assert settings.demo_mode


def test_default_app_serves_demo_tenants(cache):
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        store = cache / "store"
        keys = read_keys(store)
        assert sorted(keys["tenants"]) == DEMO_TENANTS
        served = client.app.state.service.registry.tenants()
        assert sorted(served) == DEMO_TENANTS
        assert served["demo-retrieve"].version == "v2"  # the shipped ACTIVE, not the newest folder

        tenant_key = bearer(keys["tenants"]["demo-classify"])
        response = client.post("/v1/tenants/demo-classify/classify", headers=tenant_key, files=IMAGE)
        assert response.status_code == 200, response.text
        assert {hit["label"] for hit in response.json()["results"][0]} == {"apple", "car", "dog"}

        response = client.post(
            "/v1/tenants/demo-retrieve/retrieve",
            headers=bearer(keys["tenants"]["demo-retrieve"]),
            json={"query_text": "an apple", "candidate_texts": ["an apple", "a car"]},
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == "v2"

        response = client.post(
            "/v1/tenants/demo-segment/segment",
            headers=bearer(keys["tenants"]["demo-segment"]),
            files=[("image", ("a.png", png_bytes()))],
            data={"classes": ["apple", "background"]},
        )
        assert response.status_code == 200, response.text

        # A demo tenant's key opens only that tenant, and the generated admin key opens admin routes.
        response = client.post("/v1/tenants/demo-segment/classify", headers=tenant_key, files=IMAGE)
        assert response.status_code == 401
        response = client.get("/v1/admin/tenants", headers=bearer(keys["admin"]))
        assert response.status_code == 200, response.text


def test_keys_file_private_and_reused(cache):
    first = prepare_demo(Settings())
    path = first.keys_file
    assert path == cache / "store" / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = read_keys(cache / "store")
    assert len(keys["admin"]) >= 32
    assert len(set(keys["tenants"].values()) | {keys["admin"]}) == 4

    second = prepare_demo(Settings())
    assert read_keys(cache / "store") == keys
    assert second.settings.admin_api_key.get_secret_value() == keys["admin"]
    for tenant in DEMO_TENANTS:
        assert second.settings.tenant_api_keys[tenant].get_secret_value() == keys["tenants"][tenant]
    assert second.seeded == []
    assert first.seeded == DEMO_TENANTS


def test_keys_file_permissions_tightened(cache):
    path = prepare_demo(Settings()).keys_file
    os.chmod(path, 0o644)
    prepare_demo(Settings())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"admin": "changeme", "tenants": {}}', "placeholder"),
        ('{"admin": "x", "tenants": []}', "is invalid"),
    ],
)
def test_keys_file_invalid_rejected(cache, content, message):
    store = cache / "store"
    store.mkdir(parents=True)
    (store / KEYS_FILE).write_text(content)
    with pytest.raises(ValueError, match=message) as raised:
        prepare_demo(Settings())
    assert str(store / KEYS_FILE) in str(raised.value)
    assert "delete it" in str(raised.value)
    assert "changeme" not in str(raised.value)


def test_existing_store_tenant_kept(cache, backbone_file):
    store = cache / "store"
    own = write_demo_adapter(store / "demo-classify" / "mine", backbone_file[1], seed=21, task=None)
    (store / "demo-classify" / "ACTIVE").write_text("mine\n")
    before = (own / "adapter.safetensors").read_bytes()
    (store / "demo-segment").mkdir()  # an operator deactivated and emptied it: stays so

    with TestClient(create_app(), raise_server_exceptions=False) as client:
        served = client.app.state.service.registry.tenants()
        assert served["demo-classify"].version == "mine"
        assert "demo-retrieve" in served
        assert "demo-segment" not in served
    assert sorted(p.name for p in (store / "demo-classify").iterdir()) == ["ACTIVE", "mine"]
    assert (own / "adapter.safetensors").read_bytes() == before
    assert list((store / "demo-segment").iterdir()) == []
    assert not any(p.name.startswith(".seed-") for p in store.iterdir())


def test_explicit_keys_override_generated(cache):
    tenant_key = "classify-key-0123456789abcdef"
    settings = Settings(admin_api_key=ADMIN_KEY, tenant_api_keys={"demo-classify": tenant_key})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        keys = read_keys(cache / "store")
        assert "demo-classify" not in keys["tenants"]
        assert keys["admin"] is None
        response = client.post("/v1/tenants/demo-classify/classify", headers=bearer(tenant_key), files=IMAGE)
        assert response.status_code == 200, response.text
        assert client.get("/v1/admin/tenants", headers=bearer(ADMIN_KEY)).status_code == 200
        retrieve_key = bearer(keys["tenants"]["demo-retrieve"])
        response = client.post("/v1/tenants/demo-retrieve/embed", headers=retrieve_key, json={"texts": ["a"]})
        assert response.status_code == 200, response.text


def test_explicit_backbone_turns_demo_off(cache, backbone_file, tmp_path):
    other = shutil.copy(backbone_file[0], tmp_path / "other.safetensors")
    settings = Settings(backbone_arch=TINY, backbone_pretrained=str(other))
    assert not settings.embedded_backbone
    assert not settings.demo_mode
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.app.state.service.registry.tenants() == {}
        assert client.get("/v1/admin/tenants").json()["error"]["code"] == "admin_disabled"
    assert not (cache / "store" / KEYS_FILE).exists()
    assert not (cache / "store" / "demo-classify").exists()


def test_explicit_settings_win(cache, tmp_path, monkeypatch):
    store = tmp_path / "explicit-store"
    monkeypatch.setenv("RADAPTER_ADAPTER_STORE", str(store))
    monkeypatch.setenv("RADAPTER_DEMO_TENANTS", "false")
    settings = Settings()
    assert settings.embedded_backbone
    assert not settings.demo_mode
    assert prepare_demo(settings) is None
    assert settings.adapter_store == store

    # Forced on for another backbone: seeded, and each adapter is then checked against that backbone.
    monkeypatch.setenv("RADAPTER_DEMO_TENANTS", "true")
    monkeypatch.setenv("RADAPTER_BACKBONE_ARCH", "ViT-B-16")
    monkeypatch.setenv("RADAPTER_BACKBONE_PRETRAINED", "openai")
    forced = Settings()
    assert not forced.embedded_backbone
    assert forced.demo_mode
    assert prepare_demo(forced).seeded == DEMO_TENANTS


def test_explicit_demo_without_source_fails(cache, tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match="RADAPTER_DEMO_TENANTS_DIR") as raised:
        prepare_demo(Settings(demo_tenants=True, demo_tenants_dir=absent))
    assert str(absent) in str(raised.value)
    # On by default only: a checkout without demo adapters still starts, with no demo tenants.
    setup = prepare_demo(Settings(demo_tenants_dir=absent))
    assert setup.tenants == []


def test_demo_source_several_versions_need_active(cache, backbone_file, tmp_path):
    source = tmp_path / "source"
    write_demo_adapter(source / "demo-x" / "v1", backbone_file[1], seed=31, task=None)
    write_demo_adapter(source / "demo-x" / "v2", backbone_file[1], seed=32, task=None)
    with pytest.raises(ValueError, match="ACTIVE") as raised:
        prepare_demo(Settings(demo_tenants_dir=source))
    assert str(source / "demo-x") in str(raised.value)
    (source / "demo-x" / "ACTIVE").write_text("v3\n")
    with pytest.raises(ValueError, match="'v3'"):
        prepare_demo(Settings(demo_tenants_dir=source))


def test_missing_embedded_weights_explained(cache, monkeypatch, tmp_path, capsys):
    absent = tmp_path / "radapter-emoji-vit.safetensors"
    monkeypatch.setattr(embedded, "WEIGHTS_PATH", absent)
    assert main(["serve", "--port", "0"]) == 2
    error = capsys.readouterr().err
    for expected in (
        str(absent),
        "RADAPTER_BACKBONE_ARCH",
        "RADAPTER_BACKBONE_PRETRAINED",
        "radapter pretrain",
    ):
        assert expected in error
    assert not (cache / "store" / KEYS_FILE).exists()

    with pytest.raises(FileNotFoundError, match="radapter pretrain"):
        with TestClient(create_app()):
            pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_prints_runnable_curl(cache, monkeypatch, capsys):
    port = free_port()
    servers: list[uvicorn.Server] = []
    threads: list[threading.Thread] = []

    def run_in_thread(app, host, port, log_config):
        # `radapter serve` blocks in uvicorn.run; here the same app is served from a thread instead.
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=log_config))
        servers.append(server)
        threads.append(threading.Thread(target=server.run, daemon=True))
        threads[0].start()

    monkeypatch.setattr(uvicorn, "run", run_in_thread)
    assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 0
    output = capsys.readouterr().out
    keys = read_keys(cache / "store")
    assert str(cache / "store" / KEYS_FILE) in output
    for key in [keys["admin"], *keys["tenants"].values()]:
        assert key not in output
    commands = [line.strip() for line in output.splitlines() if line.strip().startswith("curl ")]
    assert len(commands) == 3
    try:
        deadline = time.monotonic() + 60
        while not servers[0].started and time.monotonic() < deadline:
            time.sleep(0.1)
        assert servers[0].started, "the server did not start within 60 s"
        for tenant, route in zip(DEMO_TENANTS, ["classify", "retrieve", "segment"], strict=True):
            command = next(c for c in commands if f"/v1/tenants/{tenant}/{route}" in c)
            assert shlex.split(command)[-1] == f"http://127.0.0.1:{port}/v1/tenants/{tenant}/{route}"
            done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            body = json.loads(done.stdout)
            assert body.get("tenant") == tenant, done.stdout
    finally:
        servers[0].should_exit = True
        threads[0].join(timeout=30)


def test_client_url_for_wildcard_hosts():
    assert cli._client_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert cli._client_url("::", 81) == "http://[::1]:81"
    assert cli._client_url("localhost", 82) == "http://localhost:82"
