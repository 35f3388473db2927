"""Adapter checkpoints: a directory with `adapter.safetensors` and `adapter.json`."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import RAdapterConfig

FORMAT_VERSION = 1
WEIGHTS_NAME = "adapter.safetensors"
METADATA_NAME = "adapter.json"
TASKS = ("classification", "retrieval", "segmentation")


@dataclass
class AdapterMetadata:
    """Contents of `adapter.json`: what base model the adapter belongs to and how it was trained."""

    base_architecture: str
    base_weights_sha256: str
    config: RAdapterConfig
    task: str | None = None
    labels: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("base_architecture", "base_weights_sha256"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; it must be a string.")
        for name in ("labels", "templates"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"{name}={value!r} is invalid; it must be a list of strings.")
        if not isinstance(self.training, dict):
            raise ValueError(f"training={self.training!r} is invalid; it must be a JSON object.")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is invalid; choose one of {TASKS} or None.")
        if self.task == "classification" and not self.labels:
            raise ValueError("a classification adapter needs its label names; pass labels=[...].")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterMetadata:
        data = dict(data)
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"adapter format_version {version!r} is not supported; this version reads {FORMAT_VERSION}."
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown fields {unknown} in {METADATA_NAME}; known fields are {sorted(known)}."
            )
        data["config"] = RAdapterConfig.from_dict(data["config"])
        return cls(**data)


def _atomic_write(path: Path, write) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(temporary)
        # mkstemp creates 0600 files; adapters are often written by one user and served by another.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_adapter(directory: str | Path, tensors: dict[str, torch.Tensor], metadata: AdapterMetadata) -> Path:
    """Write adapter tensors and metadata into `directory` (created if needed); each file is atomic."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    validate_adapter_tensors(tensors, metadata.config)
    cpu_tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    _atomic_write(directory / WEIGHTS_NAME, lambda path: save_file(cpu_tensors, path))
    text = json.dumps(metadata.to_dict(), indent=2, sort_keys=True) + "\n"
    _atomic_write(directory / METADATA_NAME, lambda path: Path(path).write_text(text))
    return directory


def load_adapter(directory: str | Path) -> tuple[dict[str, torch.Tensor], AdapterMetadata]:
    """Read and validate an adapter directory. Only safetensors are read; nothing is unpickled."""
    directory = Path(directory)
    weights, meta_path = directory / WEIGHTS_NAME, directory / METADATA_NAME
    for path in (weights, meta_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; an adapter directory contains {WEIGHTS_NAME} and {METADATA_NAME}."
            )
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"the top level is a {type(data).__name__}, not an object")
        metadata = AdapterMetadata.from_dict(data)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{meta_path} is not a valid adapter description: {error}") from error
    try:
        tensors = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{weights} is not a readable safetensors file: {error}") from error
    validate_adapter_tensors(tensors, metadata.config)
    return tensors, metadata


def validate_adapter_tensors(tensors: dict[str, torch.Tensor], config: RAdapterConfig) -> None:
    """Check names, shapes, ranks and finiteness of adapter tensors against their configuration."""
    if not tensors:
        raise ValueError("the adapter contains no tensors.")
    for name, tensor in tensors.items():
        prefix, kind = name.rsplit(".", 1) if "." in name else ("", name)
        if not prefix.endswith((".ls_1", ".ls_2")) or kind not in ("weight", "up", "down", "scale"):
            raise ValueError(
                f"unexpected adapter tensor {name!r}; names end in ls_1/ls_2 .weight/.up/.down/.scale."
            )
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise ValueError(f"adapter tensor {name!r} is not finite floating point; the adapter is corrupt.")
        tower = "vision" if prefix.startswith("visual.") else "text"
        if tower not in config.towers:
            raise ValueError(
                f"adapter tensor {name!r} belongs to the {tower} tower, which the config excludes."
            )
        rank = config.rank_for(tower)
        _check_shape(name, kind, tensor, rank)
    prefixes = {name.rsplit(".", 1)[0] for name in tensors}
    for prefix in sorted(prefixes):
        kinds = {name.rsplit(".", 1)[1] for name in tensors if name.rsplit(".", 1)[0] == prefix}
        if kinds not in ({"weight", "scale"}, {"up", "down", "scale"}):
            raise ValueError(
                f"adapter {prefix!r} has tensors {sorted(kinds)}; expected weight+scale or up+down+scale."
            )


def _check_shape(name: str, kind: str, tensor: torch.Tensor, rank: int | None) -> None:
    shape = tuple(tensor.shape)
    if kind == "scale":
        ok = shape == ()
    elif kind == "weight":
        ok = rank is None and len(shape) == 2 and shape[0] == shape[1]
    elif kind == "up":
        ok = rank is not None and len(shape) == 2 and shape[1] == rank
    else:
        ok = rank is not None and len(shape) == 2 and shape[0] == rank
    if not ok:
        expected = "full rank" if rank is None else f"rank {rank}"
        raise ValueError(
            f"adapter tensor {name!r} has shape {shape}, which does not fit {expected} ({kind})."
        )


def check_base_matches(metadata: AdapterMetadata, architecture: str, weights_sha256: str) -> None:
    """Reject loading an adapter onto a base model other than the one it was trained on."""
    if metadata.base_architecture != architecture:
        raise ValueError(
            f"the adapter was trained on {metadata.base_architecture!r}, not {architecture!r}; "
            "load it onto the architecture it was trained on."
        )
    if metadata.base_weights_sha256 != weights_sha256:
        raise ValueError(
            f"base weights mismatch: the adapter expects sha256 {metadata.base_weights_sha256}, "
            f"the loaded weights have sha256 {weights_sha256}; "
            "load the base weights the adapter was trained on."
        )
