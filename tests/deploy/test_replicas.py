"""Two `radapter serve` processes on one adapter store converge after one admin call to either."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import TINY, make_tiny_model, perturb_adapters, save_weights
from PIL import Image

from deploy.manifests import ROOT
from training.models import weights_sha256
from training.radapter import (
    AdapterMetadata,
    RAdapterConfig,
    adapter_state_dict,
    inject_adapters,
    save_adapter,
)

pytestmark = pytest.mark.slow

# The console script of the venv running the tests, i.e. `pip install -e .` of this checkout.
RADAPTER = Path(sys.executable).with_name("radapter")
MODEL_CONFIGS = ROOT / "tests" / "fixtures" / "model_configs"
ADMIN_KEY = "admin-key-0123456789abcdef"
TENANT_KEY = "acme-key-0123456789abcdef"
WATCH_INTERVAL_S = 0.5
# docs/DEPLOY.md states the bound as one poll interval plus the time to load and merge the version.
# The tiny adapter loads in milliseconds; the rest is room for a CPU shared with other test runs.
LOAD_ALLOWANCE_S = 5.0
STARTUP_TIMEOUT_S = 90.0


def write_adapter(directory: Path, base_sha256: str, seed: int) -> None:
    """Save a non-identity classification adapter for the tiny backbone."""
    model = make_tiny_model(TINY)
    config = RAdapterConfig(alpha=0.5)
    inject_adapters(model, config)
    perturb_adapters(model, seed=seed)
    metadata = AdapterMetadata(TINY, base_sha256, config, task="classification", labels=["cat", "dog"])
    save_adapter(directory, adapter_state_dict(model), metadata)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path]:
    """An adapter store with tenant acme at v1 (active) and v2, and the backbone weights file."""
    tmp_path = tmp_path_factory.mktemp("replicas")
    backbone = save_weights(make_tiny_model(TINY), tmp_path / "tiny.safetensors")
    sha256 = weights_sha256(make_tiny_model(TINY).state_dict())
    root = tmp_path / "store"
    for seed, version in enumerate(("v1", "v2"), start=1):
        write_adapter(root / "acme" / version, sha256, seed)
    (root / "acme" / "ACTIVE").write_text("v1\n")
    return root, backbone


@pytest.fixture(scope="module")
def replicas(store) -> Iterator[list[str]]:
    """Start two service processes on loopback ports sharing the store; yield their base URLs.

    Both tests share the pair, because a start costs several seconds of torch import per process.
    """
    root, backbone = store
    tmp_path = root.parent
    assert RADAPTER.is_file(), f"{RADAPTER} is missing; install the project with pip install -e ."
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADAPTER_")}
    environment |= {
        "RADAPTER_BACKBONE_ARCH": TINY,
        "RADAPTER_MODEL_CONFIG_DIRS": str(MODEL_CONFIGS),
        "RADAPTER_BACKBONE_PRETRAINED": str(backbone),
        "RADAPTER_ADAPTER_STORE": str(root),
        "RADAPTER_ADMIN_API_KEY": ADMIN_KEY,
        "RADAPTER_TENANT_API_KEYS": f'{{"acme": "{TENANT_KEY}"}}',
        "RADAPTER_WATCH_INTERVAL_S": str(WATCH_INTERVAL_S),
        "RADAPTER_MAX_WAIT_MS": "1",
        "OMP_NUM_THREADS": "1",
    }
    processes, urls, logs = [], [], []
    for index in range(2):
        port = free_port()
        log = tmp_path / f"replica-{index}.log"
        command = [str(RADAPTER), "serve", "--host", "127.0.0.1", "--port", str(port)]
        with log.open("w") as output:
            processes.append(
                subprocess.Popen(command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT)
            )
        urls.append(f"http://127.0.0.1:{port}")
        logs.append(log)
    try:
        for process, url, log in zip(processes, urls, logs, strict=True):
            wait_ready(process, url, log)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"replica {url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"replica {url} not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def png_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (30, 160, 90)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


IMAGE = png_base64()


def served_version(url: str) -> str | None:
    """Classify one image as tenant acme; return the response's version, or None for 404."""
    response = httpx.post(
        f"{url}/v1/tenants/acme/classify",
        json={"images": [IMAGE], "top_k": 1},
        headers={"Authorization": f"Bearer {TENANT_KEY}"},
        timeout=10,
    )
    if response.status_code == 404:
        assert response.json()["error"]["code"] == "tenant_not_found"
        return None
    assert response.status_code == 200, response.text
    return response.json()["version"]


def admin(method: str, url: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.request(method, f"{url}/v1/admin/tenants/acme{path}", headers=headers, timeout=30, **kwargs)


def observe_until(url: str, expected: str | None) -> tuple[float, list[str | None]]:
    """Poll a replica until it serves `expected`; return the seconds taken and every version seen."""
    bound = WATCH_INTERVAL_S + LOAD_ALLOWANCE_S
    started = time.monotonic()
    seen = []
    while True:
        seen.append(served_version(url))
        elapsed = time.monotonic() - started
        if seen[-1] == expected:
            return elapsed, seen
        assert elapsed < bound, (
            f"{url} still serves {seen[-1]!r} after {elapsed:.1f} s, expected {expected!r}"
        )
        time.sleep(0.05)


def start_from(replicas: list[str], version: str) -> None:
    """Activate `version` and wait until both replicas serve it, whatever an earlier test left."""
    assert admin("PUT", replicas[0], "/adapter/active", json={"version": version}).status_code == 200
    for url in replicas:
        observe_until(url, version)


def test_activation_converges_on_both_replicas(replicas):
    first, second = replicas
    start_from(replicas, "v1")

    response = admin("PUT", first, "/adapter/active", json={"version": "v2"})
    assert response.status_code == 200, response.text
    assert served_version(first) == "v2", "the replica that took the admin call must serve it at once"
    elapsed, seen = observe_until(second, "v2")
    # Each replica moves forward once: v1 until the poll picks up v2, then v2, never back.
    assert seen == ["v1"] * (len(seen) - 1) + ["v2"]
    print(f"second replica served v2 after {elapsed:.2f} s ({len(seen)} requests)")

    response = admin("PUT", second, "/adapter/active", json={"version": "v1"})
    assert response.status_code == 200, response.text
    elapsed, _ = observe_until(first, "v1")
    print(f"first replica rolled back to v1 after {elapsed:.2f} s")


def test_deactivation_converges_on_both_replicas(replicas):
    first, second = replicas
    start_from(replicas, "v1")

    assert admin("DELETE", first, "/adapter").status_code == 204
    assert served_version(first) is None
    elapsed, seen = observe_until(second, None)
    assert seen == ["v1"] * (len(seen) - 1) + [None]
    print(f"second replica stopped serving acme after {elapsed:.2f} s")

    # Stored versions survive a delete without purge, so a later activation brings the tenant back.
    assert admin("PUT", second, "/adapter/active", json={"version": "v2"}).status_code == 200
    observe_until(first, "v2")
