"""Adapter directories: round trip, validation of every field, and base-model matching."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY, make_tiny_model, perturb_adapters
from safetensors.torch import save_file

from training.models import load_base_model, weights_sha256
from training.radapter import (
    AdapterMetadata,
    RAdapterConfig,
    adapter_state_dict,
    check_base_matches,
    inject_adapters,
    load_adapter,
    save_adapter,
)
from training.radapter.checkpoint import METADATA_NAME, WEIGHTS_NAME


@pytest.fixture
def adapter_dir(tmp_path):
    model = inject_adapters(make_tiny_model(), RAdapterConfig(text_rank=4))
    perturb_adapters(model)
    metadata = AdapterMetadata(
        TINY,
        weights_sha256(make_tiny_model().state_dict()),
        RAdapterConfig(text_rank=4),
        task="classification",
        labels=["fox", "cat"],
        templates=["an emoji of a {}."],
        training={"steps": 3},
    )
    return save_adapter(tmp_path / "adapter", adapter_state_dict(model), metadata)


def test_load_adapter_round_trips_tensors_and_metadata(adapter_dir):
    tensors, metadata = load_adapter(adapter_dir)
    assert metadata.config.text_rank == 4
    assert metadata.config.vision_rank is None
    assert metadata.labels == ["fox", "cat"]
    assert metadata.training == {"steps": 3}
    assert any(name.endswith("ls_1.up") for name in tensors)
    assert json.loads((adapter_dir / METADATA_NAME).read_text())["format_version"] == 1


def test_check_base_matches_names_both_hashes(adapter_dir):
    _, metadata = load_adapter(adapter_dir)
    other = weights_sha256(make_tiny_model(seed=5).state_dict())
    with pytest.raises(ValueError, match=f"{metadata.base_weights_sha256}.*{other}"):
        check_base_matches(metadata, TINY, other)
    with pytest.raises(ValueError, match="ViT-B-16"):
        check_base_matches(metadata, "ViT-B-16", metadata.base_weights_sha256)


def corrupt(adapter_dir, name, value):
    tensors, _ = load_adapter(adapter_dir)
    tensors[name] = value
    save_file(tensors, str(adapter_dir / WEIGHTS_NAME))


def test_load_adapter_rejects_non_finite_values(adapter_dir):
    tensors, _ = load_adapter(adapter_dir)
    name = next(name for name in tensors if name.endswith(".weight"))
    corrupt(adapter_dir, name, torch.full_like(tensors[name], float("nan")))
    with pytest.raises(ValueError, match="not finite"):
        load_adapter(adapter_dir)


def test_load_adapter_rejects_shape_that_contradicts_rank(adapter_dir):
    tensors, _ = load_adapter(adapter_dir)
    name = next(name for name in tensors if name.endswith(".up"))
    corrupt(adapter_dir, name, torch.zeros(tensors[name].shape[0], 7))
    with pytest.raises(ValueError, match="rank 4"):
        load_adapter(adapter_dir)


def test_load_adapter_rejects_truncated_safetensors(adapter_dir):
    data = (adapter_dir / WEIGHTS_NAME).read_bytes()
    (adapter_dir / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_adapter(adapter_dir)


def test_load_adapter_never_unpickles(adapter_dir):
    # A pickle in place of the safetensors file must be rejected, not executed.
    torch.save({"x": torch.zeros(1)}, adapter_dir / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="safetensors"):
        load_adapter(adapter_dir)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": 9}, "format_version 9"),
        ({"surprise": 1}, "unknown fields"),
        ({"task": "detection"}, "task='detection'"),
        ({"labels": []}, "needs its label names"),
    ],
)
def test_load_adapter_rejects_bad_metadata(adapter_dir, change, message):
    path = adapter_dir / METADATA_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        load_adapter(adapter_dir)


def test_load_adapter_reports_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        load_adapter(tmp_path)


def test_weights_sha256_is_format_independent_and_content_sensitive(tmp_path):
    model = make_tiny_model()
    state = model.state_dict()
    torch.save(state, tmp_path / "model.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    from_pt = load_base_model(TINY, str(tmp_path / "model.pt")).state_dict()
    from_safetensors = load_base_model(TINY, str(tmp_path / "model.safetensors")).state_dict()
    assert weights_sha256(from_pt) == weights_sha256(from_safetensors) == weights_sha256(state)
    state["logit_scale"] = state["logit_scale"] + 1
    assert weights_sha256(state) != weights_sha256(from_pt)


@pytest.mark.parametrize(
    "arch, pretrained, error, message",
    [
        ("ViT-Q-99", None, ValueError, "unknown open_clip architecture"),
        (TINY, "no-such-tag", ValueError, "neither a file nor a pretrained tag"),
        (TINY, "/missing/weights.safetensors", FileNotFoundError, "does not exist"),
    ],
)
def test_load_base_model_rejects_bad_names(arch, pretrained, error, message):
    with pytest.raises(error, match=message):
        load_base_model(arch, pretrained)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"base_architecture": 5}, "base_architecture=5"),
        ({"labels": "cat"}, "labels='cat'"),
        ({"training": []}, "training=\\[\\]"),
    ],
)
def test_load_adapter_rejects_mistyped_metadata(adapter_dir, change, message):
    path = adapter_dir / METADATA_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        load_adapter(adapter_dir)


@pytest.mark.parametrize(
    "change, message", [({"towers": "vision"}, "pass a list"), ({"alpha": True}, "alpha=True")]
)
def test_load_adapter_rejects_mistyped_config(adapter_dir, change, message):
    path = adapter_dir / METADATA_NAME
    data = json.loads(path.read_text())
    data["config"].update(change)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        load_adapter(adapter_dir)


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b'"a string"'])
def test_load_adapter_names_file_for_unreadable_metadata(adapter_dir, content):
    (adapter_dir / METADATA_NAME).write_bytes(content)
    with pytest.raises(ValueError, match="adapter.json is not a valid adapter description"):
        load_adapter(adapter_dir)
