"""The `radapter serve` subcommand."""

from __future__ import annotations

from training.cli import main


def test_serve_without_backbone_names_variable(monkeypatch, capsys):
    monkeypatch.delenv("RADAPTER_BACKBONE_ARCH", raising=False)
    monkeypatch.delenv("RADAPTER_CONFIG_FILE", raising=False)
    assert main(["serve", "--port", "0"]) == 2
    assert "RADAPTER_BACKBONE_ARCH" in capsys.readouterr().err


def test_serve_rejects_missing_config_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RADAPTER_CONFIG_FILE", raising=False)  # restored after `run` sets it
    assert main(["serve", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "RADAPTER_CONFIG_FILE" in capsys.readouterr().err
