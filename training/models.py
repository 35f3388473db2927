"""Load open_clip base models and fingerprint their weights."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path

import open_clip
import torch
from safetensors import SafetensorError
from torch import nn

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz")


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Return the sha256 of a state dict's content, independent of the file format it came from.

    The digest covers every entry in sorted key order: the key, the dtype, the shape and the raw
    bytes. Two checkpoints hash equal exactly when they hold the same tensors, so a pickled `.pt` and
    a `.safetensors` copy of one model agree, while a cast to another dtype does not.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(f"|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def register_model_config_dirs(value: str | None) -> list[Path]:
    """Register extra open_clip model-config directories with open_clip and return them.

    `value` has the form of the `RADAPTER_MODEL_CONFIG_DIRS` environment variable: a JSON list, or
    paths separated by `os.pathsep`. Each directory contains `<architecture>.json` files.
    """
    if not value or not value.strip():
        return []
    parts = json.loads(value) if value.lstrip().startswith("[") else value.split(os.pathsep)
    directories = [Path(part).expanduser() for part in parts if str(part).strip()]
    for directory in directories:
        if not directory.is_dir() or not any(directory.glob("*.json")):
            raise ValueError(
                f"RADAPTER_MODEL_CONFIG_DIRS: {str(directory)!r} is not a directory of open_clip "
                "model-config .json files; fix or unset the variable."
            )
        open_clip.add_model_config(directory)
    return directories


def prepare_output_dir(directory: Path, flag: str) -> Path:
    """Create `directory` if needed and check it is a writable directory, before any slow work starts."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{flag} {directory} is a file; pass a directory path.")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"{flag} {directory} cannot be created ({error.strerror}); choose another path."
        ) from error
    if not os.access(directory, os.W_OK):
        raise ValueError(f"{flag} {directory} is not writable; choose another path.")
    return directory


def _check_architecture(arch: str) -> None:
    if not isinstance(arch, str):
        raise ValueError(
            f"architecture {arch!r} is not a name; pass an open_clip architecture such as 'ViT-B-16'."
        )
    known = open_clip.list_models()
    if arch not in known:
        close = [name for name in known if arch.lower().replace("/", "-") in name.lower()][:8]
        raise ValueError(
            f"unknown open_clip architecture {arch!r}; similar names: {close or 'none'}. "
            "`python -c 'import open_clip; print(open_clip.list_models())'` lists all of them."
        )


def _check_pretrained(arch: str, pretrained: str) -> None:
    path = Path(pretrained).expanduser()
    looks_like_path = path.suffix in WEIGHT_SUFFIXES or "/" in pretrained or path.exists()
    if looks_like_path:
        if path.is_dir():
            raise ValueError(f"base weights {pretrained!r} is a directory; pass the weights file inside it.")
        if not path.is_file():
            raise FileNotFoundError(
                f"base weights file {pretrained!r} does not exist; pass an existing file."
            )
        return
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise ValueError(
            f"{pretrained!r} is neither a file nor a pretrained tag of {arch}; known tags: {tags or 'none'}."
        )


def load_base_model(
    arch: str, pretrained: str | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Create an open_clip model by architecture name with weights from a pretrained tag or a local file.

    `pretrained=None` gives random initialisation (smoke tests only). The model is returned in eval mode.
    """
    _check_architecture(arch)
    if pretrained is not None:
        _check_pretrained(arch, pretrained)
    try:
        model = open_clip.create_model(arch, pretrained=pretrained, device=device)
    except (
        RuntimeError,
        AssertionError,
        KeyError,
        SafetensorError,
        pickle.UnpicklingError,
        EOFError,
    ) as error:
        # open_clip raises these for files that are corrupt or hold another architecture's tensors.
        raise ValueError(
            f"could not load weights {pretrained!r} into {arch}: {type(error).__name__}: {error}. "
            "Pass an open_clip state dict (.safetensors or .pt) saved from this architecture."
        ) from error
    model.eval()
    logger.info("loaded %s (weights: %s)", arch, pretrained or "random init")
    return model
