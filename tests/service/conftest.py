"""Fixtures for service tests: a tiny local backbone file, adapter versions, and a running app."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import open_clip
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save_file

from service.main import create_app
from service.settings import Settings
from training.models import weights_sha256
from training.radapter import (
    AdapterMetadata,
    RAdapterConfig,
    adapter_state_dict,
    inject_adapters,
    save_adapter,
)

TINY = "radapter-test-tiny"
open_clip.add_model_config(Path(__file__).parents[1] / "fixtures" / "model_configs")


def make_tiny_model(arch: str = TINY, seed: int = 0) -> torch.nn.Module:
    """Create the tiny test architecture with reproducible random weights, in eval mode."""
    torch.manual_seed(seed)
    return open_clip.create_model(arch).eval()


ADMIN_KEY = "admin-key-0123456789abcdef"
TENANT_KEYS = {"acme": "acme-key-0123456789abcdef", "globex": "globex-key-0123456789abcdef"}
LABELS = ["cat", "dog", "fox"]


def make_adapter(
    directory: Path,
    base_sha256: str,
    seed: int,
    rank: int | None = None,
    alpha: float = 0.5,
    labels: list[str] | None = None,
) -> Path:
    """Write a non-identity adapter for the tiny backbone (seeded, so two seeds give two tenants)."""
    model = make_tiny_model(TINY, seed=0)
    config = RAdapterConfig(vision_rank=rank, text_rank=rank, alpha=alpha)
    inject_adapters(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith((".weight", ".up")) and (".ls_1." in name or ".ls_2." in name):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
            elif name.endswith(".scale") and (".ls_1." in name or ".ls_2." in name):
                parameter.fill_(1.0)
    labels = LABELS if labels is None else labels
    metadata = AdapterMetadata(
        base_architecture=TINY,
        base_weights_sha256=base_sha256,
        config=config,
        task="classification" if labels else None,
        labels=labels,
        templates=["a photo of a {}.", "a {}"],
    )
    return save_adapter(directory, adapter_state_dict(model), metadata)


@pytest.fixture(scope="session")
def backbone_file(tmp_path_factory) -> tuple[Path, str]:
    """The tiny model's weights as a local safetensors file, and their sha256."""
    state = make_tiny_model(TINY, seed=0).state_dict()
    path = tmp_path_factory.mktemp("backbone") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path, weights_sha256(state)


@pytest.fixture(scope="session")
def adapter_sources(tmp_path_factory, backbone_file) -> dict[str, Path]:
    """Adapter directories outside the store, to upload: two tenants' v1, acme v2, and bad ones."""
    root = tmp_path_factory.mktemp("adapters")
    sha = backbone_file[1]
    return {
        "acme-v1": make_adapter(root / "acme-v1", sha, seed=1),
        "acme-v2": make_adapter(root / "acme-v2", sha, seed=2, rank=4),
        "globex-v1": make_adapter(root / "globex-v1", sha, seed=3, alpha=0.8),
        "wrong-base": make_adapter(root / "wrong-base", "0" * 64, seed=4),
    }


def seed_store(store: Path, sources: dict[str, Path], tenants: dict[str, str]) -> None:
    """Copy adapter sources into `<store>/<tenant>/<version>/` and point ACTIVE at them."""
    import shutil

    for tenant, source in tenants.items():
        shutil.copytree(sources[source], store / tenant / "v1")
        (store / tenant / "ACTIVE").write_text("v1\n")


def make_settings(store: Path, backbone: Path, **overrides) -> Settings:
    values = dict(
        backbone_arch=TINY,
        backbone_pretrained=str(backbone),
        adapter_store=store,
        admin_api_key=ADMIN_KEY,
        tenant_api_keys=TENANT_KEYS,
        max_wait_ms=2.0,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def store(tmp_path, adapter_sources) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    seed_store(root, adapter_sources, {"acme": "acme-v1", "globex": "globex-v1"})
    return root


@pytest.fixture
def client(store, backbone_file) -> Iterator[TestClient]:
    app = create_app(make_settings(store, backbone_file[0]))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TENANT_KEYS[tenant]}"}


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def png_bytes(color=(200, 30, 30), size=(40, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()
