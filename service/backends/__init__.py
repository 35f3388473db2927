"""Inference engines that run the shared backbone with one tenant's overlay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class VariantSpec:
    """Identity of one merged variant: the tenant's adapter version, its content and the alpha.

    `adapter_sha256` covers the adapter tensors, so a version id that is deleted and uploaded again with
    other weights never matches an engine artefact (an ONNX export) built from the old weights.
    """

    tenant: str
    version: str
    alpha: float
    adapter_sha256: str

    def __str__(self) -> str:
        return f"{self.tenant}/{self.version} alpha={self.alpha}"


class Backend(Protocol):
    """Engine interface used by the worker and registry. The encode methods run on the worker's one thread."""

    name: str
    provider: str
    # True when `prepare` must run on the engine thread (it touches state that inference reads); False
    # when it is slow and self-contained (an ONNX export) and must not stall other tenants' requests.
    prepare_on_engine_thread: bool

    def prepare(self, spec: VariantSpec, overlay: dict[str, torch.Tensor]) -> object:
        """Turn a merged overlay into the engine's per-variant handle (device tensors, sessions)."""

    def encode_image(self, handle: object, pixels: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised image embeddings `(B, D)` float32 on CPU."""

    def encode_text(self, handle: object, ids: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised text embeddings `(B, D)` float32 on CPU."""

    def encode_dense(self, handle: object, pixels: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised patch embeddings `(B, grid_h, grid_w, D)` float32 on CPU."""

    def discard(self, handle: object) -> None:
        """Delete what a variant evicted for good keeps outside memory (an export on disk), if anything."""

    def handle_nbytes(self, handle: object) -> int:
        """Return the memory a handle holds, in bytes, for the overlay cache's bound."""
