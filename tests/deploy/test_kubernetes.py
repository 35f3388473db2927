"""Kubernetes manifests and kustomize overlays against the app, the settings and the image."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from deploy.manifests import (
    IMAGE_NAME,
    KUBERNETES,
    VALID_KEYS,
    VARIANTS,
    find_objects,
    kubernetes_documents,
    load_yaml_documents,
    pod_containers,
    read_env_file,
    settings_from_environment,
    settings_variables,
)

CONTAINER_PORT = 8000  # the Dockerfile's EXPOSE and CMD --port, checked in test_dockerfile.py
BASE = KUBERNETES / "base"
OVERLAYS = {variant: KUBERNETES / "overlays" / variant for variant in VARIANTS}
DOCUMENTS = kubernetes_documents()
# Complete objects only: overlay files are partial patches.
ALL = [
    document
    for path, documents in DOCUMENTS.items()
    if "overlays" not in path.relative_to(KUBERNETES).parts
    for document in documents
]
BASE_OBJECTS = [
    document for path, documents in DOCUMENTS.items() if path.parent == BASE for document in documents
]


def kustomization(directory: Path) -> dict:
    return load_yaml_documents(directory / "kustomization.yaml")[0]


def only(documents: list[dict], kind: str) -> dict:
    (found,) = find_objects(documents, kind)
    return found


def settings_env(variant: str) -> dict[str, str]:
    """Merge the configMapGenerator env files of base and overlay as kustomize does (overlay wins)."""
    merged: dict[str, str] = {}
    for directory in (BASE, OVERLAYS[variant]):
        for generator in kustomization(directory).get("configMapGenerator", []):
            assert generator["name"] == "radapter-settings"
            for env_file in generator.get("envs", []):
                merged.update(read_env_file(directory / env_file))
    return merged


def secret_example() -> dict:
    return only(DOCUMENTS[KUBERNETES / "secret.example.yaml"], "Secret")


def deployment() -> dict:
    return only(BASE_OBJECTS, "Deployment")


def inference_container() -> dict:
    (container,) = pod_containers(deployment())
    return container


def test_kustomize_references_existing_files():
    for directory in (BASE, *OVERLAYS.values()):
        config = kustomization(directory)
        referenced = list(config.get("resources", []))
        referenced += [patch["path"] for patch in config.get("patches", [])]
        for generator in config.get("configMapGenerator", []):
            referenced += generator.get("envs", []) + generator.get("files", [])
        for name in referenced:
            target = directory / name
            assert target.exists(), f"{directory / 'kustomization.yaml'} references missing {name}"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file()


def test_overlay_patches_target_base_objects():
    base_names = {(d["kind"], d["metadata"]["name"]) for d in BASE_OBJECTS}
    for directory in OVERLAYS.values():
        for patch in kustomization(directory).get("patches", []):
            for document in load_yaml_documents(directory / patch["path"]):
                key = (document["kind"], document["metadata"]["name"])
                assert key in base_names, f"{patch['path']} patches {key}, which the base does not define"


def test_secret_example_stays_out_of_kustomize():
    for directory in (BASE, *OVERLAYS.values()):
        assert "secret.example.yaml" not in str(kustomization(directory).get("resources", []))


def test_every_container_sets_resources():
    for path, documents in DOCUMENTS.items():
        for document in documents:
            if document.get("kind") not in ("Deployment", "Job"):
                continue
            for container in pod_containers(document):
                resources = container.get("resources", {})
                for section in ("requests", "limits"):
                    missing = {"cpu", "memory"} - set(resources.get(section, {}))
                    assert not missing, f"{path.name}: {container['name']} has no {section} for {missing}"


def test_probes_use_app_routes(get_paths):
    container = inference_container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in get_paths
        assert get["port"] == "http"


def test_ports_agree():
    container = inference_container()
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": CONTAINER_PORT}
    args = container["args"]
    assert int(args[args.index("--port") + 1]) == CONTAINER_PORT
    service = only(BASE_OBJECTS, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == CONTAINER_PORT


def test_metrics_annotation_is_a_route(get_paths):
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in get_paths


def test_selectors_match_pod_labels():
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment()["spec"]["selector"]["matchLabels"],
        only(BASE_OBJECTS, "Service")["spec"]["selector"],
        only(BASE_OBJECTS, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()


def test_autoscaler_targets_deployment():
    target = only(BASE_OBJECTS, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment()["metadata"]["name"])


def test_settings_env_names_only_settings():
    for variant in VARIANTS:
        unknown = set(settings_env(variant)) - settings_variables()
        assert not unknown, f"{variant} ConfigMap sets variables no setting reads: {sorted(unknown)}"


def test_container_env_names_only_settings():
    for path, documents in DOCUMENTS.items():
        for document in documents:
            if document.get("kind") not in ("Deployment", "Job"):
                continue
            for container in pod_containers(document):
                for variable in container.get("env", []):
                    if variable["name"].startswith("RADAPTER_"):
                        assert variable["name"] in settings_variables(), f"{path.name}: {variable['name']}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_settings_load_per_overlay(variant, monkeypatch):
    settings = settings_from_environment(settings_env(variant) | VALID_KEYS, monkeypatch)
    assert settings.device == ("cuda" if variant == "gpu" else "cpu")
    assert settings.watch_interval_s > 0, "replicas sharing a store must watch it"
    mounts = {mount["mountPath"]: mount for mount in inference_container()["volumeMounts"]}
    assert str(settings.adapter_store) in mounts
    assert not mounts[str(settings.adapter_store)].get("readOnly", False)
    assert str(settings.backbone_pretrained).startswith(next(p for p in mounts if p == "/models"))


def test_secret_example_is_rejected(monkeypatch):
    placeholders = secret_example()["stringData"]
    assert set(placeholders) == set(VALID_KEYS)
    with pytest.raises(ValidationError) as error:
        settings_from_environment(settings_env("cpu") | placeholders, monkeypatch)
    for variable in placeholders:
        assert variable in str(error.value)


def test_deployment_reads_secret_keys():
    secret = secret_example()
    references = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in inference_container()["env"]
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    assert set(references) == set(secret["stringData"])
    for name, reference in references.items():
        assert reference == {"name": secret["metadata"]["name"], "key": name}


def test_volumes_and_claims_exist():
    claims = {d["metadata"]["name"] for d in find_objects(ALL, "PersistentVolumeClaim")}
    for document in find_objects(ALL, "Deployment") + find_objects(ALL, "Job"):
        spec = document["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for container in pod_containers(document):
            for mount in container["volumeMounts"]:
                assert mount["name"] in volumes, (
                    f"{container['name']} mounts undefined volume {mount['name']}"
                )
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_adapter_store_is_shared():
    store = next(
        d
        for d in find_objects(BASE_OBJECTS, "PersistentVolumeClaim")
        if d["metadata"]["name"] == "radapter-adapters"
    )
    assert store["spec"]["accessModes"] == ["ReadWriteMany"]


def test_runs_as_image_user():
    security = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    # The Dockerfile's APP_UID; a different uid could not write the store created for it.
    assert security["runAsUser"] == security["fsGroup"] == 10001
    assert inference_container()["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("variant", VARIANTS)
def test_overlay_sets_image_tag(variant):
    (image,) = kustomization(OVERLAYS[variant])["images"]
    assert image["name"] == inference_container()["image"].split(":")[0] == IMAGE_NAME
    assert image["newTag"] == variant


def test_gpu_overlay_requests_gpu():
    patch = load_yaml_documents(OVERLAYS["gpu"] / "deployment-gpu.yaml")[0]
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    assert container["name"] == inference_container()["name"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in str(inference_container()["resources"])


def test_gpu_autoscaler_metric_is_exported():
    from service.metrics import Metrics

    patch = load_yaml_documents(OVERLAYS["gpu"] / "hpa-gpu.yaml")[0]
    (metric,) = patch["spec"]["metrics"]
    exported = {m.name for m in Metrics().registry.collect()}
    assert metric["pods"]["metric"]["name"] in exported


@pytest.mark.parametrize("variant", VARIANTS)
def test_kustomize_build_renders(variant):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed, so the overlays are checked file by file only")
    result = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS[variant])], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    config_map = only(rendered, "ConfigMap")
    assert config_map["data"] == settings_env(variant)
    (container,) = pod_containers(only(rendered, "Deployment"))
    assert container["image"] == f"{IMAGE_NAME}:{variant}"
    assert container["envFrom"][0]["configMapRef"]["name"] == config_map["metadata"]["name"]
    assert ("nvidia.com/gpu" in container["resources"]["limits"]) == (variant == "gpu")
    assert re.fullmatch(r"radapter-settings-[a-z0-9]{10}", config_map["metadata"]["name"])
