"""deploy/compose.yaml, its GPU override and the example env file against the image and the settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deploy.manifests import (
    DEPLOY,
    IMAGE_NAME,
    ROOT,
    VALID_KEYS,
    load_yaml_documents,
    read_env_file,
    settings_from_environment,
    settings_variables,
)

COMPOSE = load_yaml_documents(DEPLOY / "compose.yaml")[0]
GPU_OVERRIDE = load_yaml_documents(DEPLOY / "compose.gpu.yaml")[0]
ENV_EXAMPLE = DEPLOY / "radapter.env.example"
CONTAINER_PORT = 8000  # the Dockerfile's EXPOSE and CMD --port, checked in test_dockerfile.py


def service(document: dict) -> dict:
    return document["services"]["radapter"]


def volume_targets(definition: dict) -> dict[str, dict]:
    return {volume["target"]: volume for volume in definition["volumes"]}


def test_image_tag_matches_build_variant():
    for document, variant in ((COMPOSE, "cpu"), (GPU_OVERRIDE, "gpu")):
        definition = service(document)
        assert definition["image"] == f"{IMAGE_NAME}:{variant}"
        assert definition["build"]["args"]["VARIANT"] == variant


def test_build_context_is_repository_root():
    build = service(COMPOSE)["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()


def test_published_port_reaches_container_port():
    (mapping,) = service(COMPOSE)["ports"]
    assert int(mapping.rsplit(":", 1)[1]) == CONTAINER_PORT


def test_env_file_is_the_example_copy():
    (env_file,) = service(COMPOSE)["env_file"]
    assert env_file["required"] is True
    assert (DEPLOY / f"{env_file['path']}.example").is_file()


def test_env_example_names_only_settings():
    unknown = set(read_env_file(ENV_EXAMPLE)) - settings_variables()
    assert not unknown, f"{ENV_EXAMPLE.name} sets variables no setting reads: {sorted(unknown)}"


def test_env_example_keys_are_rejected(monkeypatch):
    with pytest.raises(ValidationError) as error:
        settings_from_environment(read_env_file(ENV_EXAMPLE), monkeypatch)
    message = str(error.value)
    for variable in VALID_KEYS:
        assert variable in message


def test_env_example_loads_with_real_keys(monkeypatch):
    environment = read_env_file(ENV_EXAMPLE) | VALID_KEYS
    settings = settings_from_environment(environment, monkeypatch)
    assert settings.watch_interval_s > 0, "replicas sharing a store must watch it"
    assert str(settings.backbone_pretrained).startswith("/models/")


def test_store_and_models_are_mounted():
    targets = volume_targets(service(COMPOSE))
    # The image sets RADAPTER_ADAPTER_STORE=/srv/adapters (test_dockerfile.py checks it).
    assert "/srv/adapters" in targets
    assert not targets["/srv/adapters"].get("read_only", False)
    assert targets["/models"]["read_only"] is True


def test_resources_are_limited():
    resources = service(COMPOSE)["deploy"]["resources"]
    for section in ("limits", "reservations"):
        assert {"cpus", "memory"} <= set(resources[section])


def test_gpu_override_requests_gpu(monkeypatch):
    definition = service(GPU_OVERRIDE)
    (device,) = definition["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    environment = read_env_file(ENV_EXAMPLE) | VALID_KEYS | definition["environment"]
    assert settings_from_environment(environment, monkeypatch).device == "cuda"
