"""Shared fixtures: tiny open_clip architectures registered from tests/fixtures/model_configs."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
TINY = "radapter-test-tiny"
TINY_CUSTOM_TEXT = "radapter-test-tiny-custom-text"

open_clip.add_model_config(FIXTURES / "model_configs")


def make_tiny_model(arch: str = TINY, seed: int = 0) -> torch.nn.Module:
    """Create a randomly initialised tiny open_clip model in eval mode, reproducibly."""
    torch.manual_seed(seed)
    return open_clip.create_model(arch).eval()


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    return make_tiny_model()


@pytest.fixture
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 32 px images and four tokenised captions of different lengths."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 32, 32, generator=generator)
    tokenizer = open_clip.get_tokenizer(TINY)
    texts = tokenizer(["a fox", "a photo of a red fox in snow", "cat", "an emoji of a smiling face"])
    return images, texts
