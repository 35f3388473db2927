"""PyTorch engine: one model in memory, tenant overlays swapped in per call with `functional_call`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..backbone import Backbone
from . import VariantSpec

PREFIX = "clip."


class Encoders(nn.Module):
    """The backbone's image, text and dense (per-patch) encoders behind one `forward`.

    `functional_call` replaces parameters only for the duration of one `forward`, so the three entry
    points share a module whose parameter names are the CLIP state-dict names under `clip.`.
    """

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, mode: str, inputs: torch.Tensor) -> torch.Tensor:
        if mode == "image":
            return F.normalize(self.clip.encode_image(inputs), dim=-1)
        if mode == "text":
            return F.normalize(self.clip.encode_text(inputs), dim=-1)
        return F.normalize(self._patch_embeddings(inputs), dim=-1)

    def _patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        # Same path as VisionTransformer.forward (open_clip 3.x, class-token pooling), except that every
        # token, not only the class token, goes through ln_post and the projection.
        visual = self.clip.visual
        tokens = visual._embeds(pixels)  # (B, 1 + grid_h * grid_w, width)
        tokens = visual.transformer(tokens)
        tokens = visual.ln_post(tokens)
        patches = tokens[:, 1:] @ visual.proj  # (B, grid_h * grid_w, D)

        grid_h, grid_w = visual.grid_size
        return patches.reshape(pixels.shape[0], grid_h, grid_w, -1)


class TorchBackend:
    """Runs the shared model in its serving dtype; a tenant costs only its overlay tensors."""

    name = "torch"
    prepare_on_engine_thread = True

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.encoders = Encoders(backbone.model).eval()
        device = backbone.device
        if device.type == "cuda":
            self.provider = f"{torch.cuda.get_device_name(device)} ({device}, {backbone.dtype})"
        else:
            self.provider = f"cpu ({backbone.dtype}, {torch.get_num_threads()} threads)"

    def prepare(self, spec: VariantSpec, overlay: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device, dtype = self.backbone.device, self.backbone.dtype
        return {PREFIX + name: tensor.to(device=device, dtype=dtype) for name, tensor in overlay.items()}

    def discard(self, handle: dict[str, torch.Tensor]) -> None:
        """Do nothing: an overlay lives only in memory and goes with its last reference."""

    def handle_nbytes(self, handle: dict[str, torch.Tensor]) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in handle.values())

    def _run(self, mode: str, handle: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.to(self.backbone.device)
        if inputs.is_floating_point():
            inputs = inputs.to(self.backbone.dtype)
        with torch.inference_mode():
            outputs = functional_call(self.encoders, handle, (mode, inputs), strict=False)
        return outputs.float().cpu()

    def encode_image(self, handle: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
        return self._run("image", handle, pixels)

    def encode_text(self, handle: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        return self._run("text", handle, ids)

    def encode_dense(self, handle: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
        return self._run("dense", handle, pixels)
