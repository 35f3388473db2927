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


def test_serve_settings_errors_never_print_keys(monkeypatch, capsys):
    # pydantic's default message quotes the input; for settings that input is API keys.
    secret = "acme-REAL-SECRET-0123456789"
    monkeypatch.setenv("RADAPTER_CONFIG_FILE", "")
    monkeypatch.setenv("RADAPTER_ADMIN_API_KEY", "Sh0rtS3cret!")
    monkeypatch.setenv(
        "RADAPTER_TENANT_API_KEYS", f'{{"acme": "{secret}", "../x": "other-REAL-SECRET-0123456789"}}'
    )
    monkeypatch.setenv("RADAPTER_PRECISION", "float16")

    assert main(["serve", "--port", "0"]) == 2

    error = capsys.readouterr().err
    assert "RADAPTER_ADMIN_API_KEY" in error
    for fragment in ("Sh0rtS3cret", "REAL-SECRET", "0123456789"):
        assert fragment not in error
