"""Load open_clip base models and fingerprint their weights."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import open_clip
import torch
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


def _check_architecture(arch: str) -> None:
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
    model = open_clip.create_model(arch, pretrained=pretrained, device=device)
    model.eval()
    logger.info("loaded %s (weights: %s)", arch, pretrained or "random init")
    return model
