"""Inference engines that run the shared backbone with one tenant's overlay."""

from __future__ import annotations

from typing import Protocol

import torch


class Backend(Protocol):
    """What the worker needs from an engine; every method runs on the worker's single thread."""

    name: str
    provider: str

    def prepare(self, key: str, overlay: dict[str, torch.Tensor]) -> object:
        """Turn a merged overlay into the engine's per-variant handle (device tensors, sessions)."""

    def encode_image(self, handle: object, pixels: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised image embeddings `(B, D)` float32 on CPU."""

    def encode_text(self, handle: object, ids: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised text embeddings `(B, D)` float32 on CPU."""

    def encode_dense(self, handle: object, pixels: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised patch embeddings `(B, grid_h, grid_w, D)` float32 on CPU."""

    def handle_nbytes(self, handle: object) -> int:
        """Return the memory a handle holds, in bytes, for the overlay cache's bound."""
