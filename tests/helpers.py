"""Helpers shared by tests: tiny registered architectures, non-identity adapters, saved weights."""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file
from torch import nn

from training.radapter import iter_adapters

FIXTURES = Path(__file__).parent / "fixtures"
TINY = "radapter-test-tiny"
TINY_CUSTOM_TEXT = "radapter-test-tiny-custom-text"

open_clip.add_model_config(FIXTURES / "model_configs")


def make_tiny_model(arch: str = TINY, seed: int = 0) -> nn.Module:
    """Create a randomly initialised tiny open_clip model in eval mode, reproducibly."""
    torch.manual_seed(seed)
    return open_clip.create_model(arch).eval()


def perturb_adapters(model: nn.Module, std: float = 0.05, seed: int = 0) -> None:
    """Give every adapter random non-zero weights and a scale away from its initial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, adapter in iter_adapters(model):
            for name, parameter in adapter.named_parameters(recurse=False):
                if name == "scale":
                    parameter.fill_(0.3)
                else:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def save_weights(model: nn.Module, path: Path) -> Path:
    """Save a plain model's state dict as safetensors, the local-file form open_clip loads."""
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(path))
    return path
