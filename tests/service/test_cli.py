"""The `radapter serve` subcommand."""

from __future__ import annotations

from training import embedded
from training.cli import main


def test_serve_without_backbone_names_variable(tmp_path, monkeypatch, capsys):
    # Without RADAPTER_BACKBONE_ARCH the embedded backbone is served; its weights are absent here.
    monkeypatch.delenv("RADAPTER_BACKBONE_ARCH", raising=False)
    monkeypatch.setattr(embedded, "WEIGHTS_PATH", tmp_path / "absent.safetensors")
    monkeypatch.setenv("RADAPTER_CONFIG_FILE", "")
    assert main(["serve", "--port", "0"]) == 2
    assert "RADAPTER_BACKBONE_ARCH" in capsys.readouterr().err


def test_serve_rejects_missing_config_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RADAPTER_CONFIG_FILE", "")  # so the value `run` sets is undone afterwards
    assert main(["serve", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "RADAPTER_CONFIG_FILE" in capsys.readouterr().err
