"""Custom open_clip architectures from RADAPTER_MODEL_CONFIG_DIRS."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import open_clip
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.main import create_app
from service.settings import Settings
from tests.service.conftest import make_settings

FIXTURE_CONFIG = Path(__file__).parents[1] / "fixtures" / "model_configs" / "radapter-test-tiny.json"


def test_config_dirs_from_environment(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
        shutil.copy(FIXTURE_CONFIG, directory / "x.json")

    monkeypatch.setenv("RADAPTER_MODEL_CONFIG_DIRS", f"{first}{os.pathsep}{second}")
    assert Settings().model_config_dirs == [first, second]
    monkeypatch.setenv("RADAPTER_MODEL_CONFIG_DIRS", f'["{first}"]')
    assert Settings().model_config_dirs == [first]


def test_config_dirs_reject_missing_or_empty(tmp_path):
    with pytest.raises(ValidationError, match="is not a directory"):
        Settings(model_config_dirs=[tmp_path / "absent"])
    with pytest.raises(ValidationError, match="contains no .json"):
        Settings(model_config_dirs=[tmp_path])


def test_custom_architecture_served(tmp_path, backbone_file):
    # A name no test registers, so only the setting can make open_clip resolve it.
    arch = "radapter-test-custom-dir"
    assert arch not in open_clip.list_models()
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    shutil.copy(FIXTURE_CONFIG, config_dir / f"{arch}.json")

    settings = make_settings(
        tmp_path / "store", backbone_file[0], backbone_arch=arch, model_config_dirs=[config_dir]
    )
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
    assert ready["backbone"] == arch
    assert ready["backbone_sha256"] == backbone_file[1]


def test_unknown_architecture_names_setting(tmp_path, backbone_file):
    settings = make_settings(tmp_path / "store", backbone_file[0], backbone_arch="no-such-arch")
    with pytest.raises(ValueError, match="RADAPTER_MODEL_CONFIG_DIRS"):
        with TestClient(create_app(settings)):
            pass
