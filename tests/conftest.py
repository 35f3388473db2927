"""Shared fixtures over the tiny open_clip architectures defined in tests/helpers.py."""

from __future__ import annotations

import open_clip
import pytest
import torch
from helpers import TINY, make_tiny_model


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
