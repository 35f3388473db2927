"""Loaders for the deployment files: Dockerfile instructions, compose files, Kubernetes manifests."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from service.main import create_app
from service.settings import CONFIG_FILE_VARIABLE, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
IMAGE_NAME = "radapter"
VARIANTS = ("cpu", "gpu")
# Valid keys to swap in for the placeholders when checking that the rest of a settings file loads.
VALID_KEYS = {
    "RADAPTER_ADMIN_API_KEY": "admin-key-0123456789abcdef",
    "RADAPTER_TENANT_API_KEYS": json.dumps({"acme": "acme-key-0123456789abcdef"}),
}


@dataclass
class Instruction:
    """One Dockerfile instruction with continuation lines joined and comments removed."""

    line: int
    keyword: str
    value: str
    stage: str | None

    def json_args(self) -> list[str]:
        """Parse the exec (JSON array) form, which is what ENTRYPOINT, CMD and HEALTHCHECK use here."""
        value = self.value
        if self.keyword == "HEALTHCHECK":
            value = value[value.index("CMD") + len("CMD") :]
        return json.loads(value)


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """Split a Dockerfile into instructions, tracking the stage (`FROM ... AS name`) each belongs to."""
    instructions: list[Instruction] = []
    stage = None
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if not pending:
            start = number
        pending.append(stripped.removesuffix("\\").strip())
        if stripped.endswith("\\"):
            continue
        keyword, _, value = " ".join(pending).partition(" ")
        pending = []
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", value, re.IGNORECASE)
            stage = match.group(1) if match else None
        instructions.append(Instruction(start, keyword, value.strip(), stage))
    return instructions


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """Return the ARGs declared before the first FROM, with their defaults."""
    values = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.value.partition("=")
            values[name] = default
    return values


def env_assignments(instruction: Instruction) -> dict[str, str]:
    """Parse `ENV a=1 b=2` into a dict."""
    return dict(token.split("=", 1) for token in shlex.split(instruction.value))


def load_yaml_documents(path: Path) -> list[dict]:
    """Load every non-empty YAML document of a file."""
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a KEY=VALUE file as compose and kustomize do: no quoting, `#` starts a comment line."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert "=" in line, f"{path}:{number}: expected KEY=VALUE, got {line!r}"
        key, value = line.split("=", 1)
        values[key] = value
    return values


def settings_variables() -> set[str]:
    """Every environment variable the service reads: one per settings field, plus the config file."""
    return {f"RADAPTER_{name.upper()}" for name in Settings.model_fields} | {CONFIG_FILE_VARIABLE}


def settings_from_environment(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Build Settings from exactly these variables, as the service does at startup."""
    for variable in settings_variables():
        monkeypatch.delenv(variable, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return Settings()


def get_routes() -> set[str]:
    """Return the paths the real app serves with GET, from its OpenAPI schema."""
    schema = create_app(Settings.model_construct()).openapi()
    return {path for path, operations in schema["paths"].items() if "get" in operations}


def kubernetes_documents() -> dict[Path, list[dict]]:
    """Load every Kubernetes manifest except kustomization files, by path."""
    return {
        path: load_yaml_documents(path)
        for path in sorted(KUBERNETES.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def find_objects(documents: list[dict], kind: str) -> list[dict]:
    return [document for document in documents if document.get("kind") == kind]


def pod_containers(document: dict) -> list[dict]:
    """Return the containers (init containers included) of a Deployment or Job."""
    spec = document["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]
