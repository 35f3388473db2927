"""Batched image augmentations for 64 px emoji art, run on whole uint8 batches held in memory.

Per-image PIL transforms in worker processes would take one of the two CPU cores this recipe is
sized for. Here a batch is augmented with a handful of tensor ops: one affine warp (random resized
crop, flip, small rotation), colour jitter, and three style changes that imitate renditions the
pretraining split lacks: greyscale, line art (black edges on white, like OpenMoji black) and
silhouettes (dark shapes on white, like Fluent high contrast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the batch augmentations; all zero gives a plain resize."""

    min_scale: float = 0.8  # smallest crop side as a fraction of the image side
    max_rotation: float = 5.0  # degrees
    flip_prob: float = 0.5
    jitter: float = 0.3  # brightness, contrast and saturation factors drawn from [1 - j, 1 + j]
    grayscale_prob: float = 0.05
    line_art_prob: float = 0.075
    silhouette_prob: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"min_scale={self.min_scale!r} is invalid; it must lie in (0, 1].")
        for name in ("flip_prob", "grayscale_prob", "line_art_prob", "silhouette_prob", "jitter"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} is invalid; it must lie in [0, 1].")


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Apply open_clip's OpenAI mean and std to (B, 3, H, W) images in [0, 1]."""
    mean = torch.tensor(OPENAI_DATASET_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (B, 3, H, W) uint8 images to `size` float images in [0, 1], as evaluation does."""
    floats = images.float() / 255.0
    if floats.shape[-1] != size:
        floats = F.interpolate(floats, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return floats.clamp(0.0, 1.0)


def _affine(
    images: torch.Tensor, size: int, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    batch = images.shape[0]
    scale = config.min_scale + (1.0 - config.min_scale) * torch.rand(batch, generator=generator)
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(config.max_rotation)
    flip = torch.where(torch.rand(batch, generator=generator) < config.flip_prob, -1.0, 1.0)
    # The crop centre may move as far as keeps the crop inside the image.
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * (1.0 - scale)[:, None]

    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * flip, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, [batch, 3, size, size], align_corners=False)

    # Warp the inverted image so that zero padding outside the source becomes white.
    inverted = 1.0 - images
    warped = F.grid_sample(inverted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return 1.0 - warped


def _jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    batch = images.shape[0]

    def factor() -> torch.Tensor:
        return (1.0 + (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * strength).to(images.dtype)

    images = images * factor()
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factor() + mean
    gray = images.mean(dim=1, keepdim=True)
    images = (images - gray) * factor() + gray
    return images.clamp(0.0, 1.0)


def _line_art(images: torch.Tensor) -> torch.Tensor:
    gray = images.mean(dim=1, keepdim=True)
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=images.dtype)
    kernels = torch.stack([kernel_x, kernel_x.T]).unsqueeze(1)  # (2, 1, 3, 3)
    gradients = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = gradients.pow(2).sum(dim=1, keepdim=True).sqrt()
    edges = (magnitude > 0.35).to(images.dtype)
    return (1.0 - edges).expand(-1, 3, -1, -1)


def _silhouette(images: torch.Tensor) -> torch.Tensor:
    # Foreground is whatever differs from the white background; near-white fill stays white,
    # which leaves the light inner details that high-contrast renditions also keep.
    foreground = (images.min(dim=1, keepdim=True).values < 0.85).to(images.dtype)
    return (1.0 - foreground).expand(-1, 3, -1, -1)


def _replace(images: torch.Tensor, styled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), styled, images)


def augment(
    images: torch.Tensor, size: int, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Augment (B, 3, H, W) uint8 images into normalised (B, 3, size, size) float32 model inputs.

    The same `generator` state gives the same output, which makes a resumed run repeat a step exactly.
    """
    batch = images.shape[0]
    floats = images.float() / 255.0

    warped = _affine(floats, size, config, generator)
    jittered = _jitter(warped, config.jitter, generator)

    draws = torch.rand(batch, 3, generator=generator)
    gray = jittered.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    styled = _replace(jittered, gray, draws[:, 0] < config.grayscale_prob)
    styled = _replace(styled, _line_art(warped), draws[:, 1] < config.line_art_prob)
    styled = _replace(styled, _silhouette(warped), draws[:, 2] < config.silhouette_prob)
    return normalize(styled)
