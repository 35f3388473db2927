"""The one frozen base model every tenant shares: weights, fingerprint, tokenizer and preprocessing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from PIL import Image
from torch import nn

from training.models import load_base_model, weights_sha256

from .settings import Settings

logger = logging.getLogger(__name__)

# The only base tensors a merge changes; every tenant overlay replaces a subset of these.
MERGEABLE_SUFFIXES = (
    ".attn.out_proj.weight",
    ".attn.out_proj.bias",
    ".mlp.c_proj.weight",
    ".mlp.c_proj.bias",
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TokenizedTexts:
    """Token ids `(N, context_length)` and, per text, whether it was cut to fit the context."""

    ids: torch.Tensor
    truncated: list[bool]


class Backbone:
    """The base model in serving precision, plus what requests need to prepare inputs for it."""

    def __init__(
        self, model: nn.Module, arch: str, sha256: str, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.model = model
        self.arch = arch
        self.sha256 = sha256
        self.device = device
        self.dtype = dtype
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.context_length = int(model.context_length)
        self.logit_scale = float(model.logit_scale.detach().float().exp())
        self.preprocess = open_clip.image_transform(
            model.visual.image_size,
            is_train=False,
            mean=getattr(model.visual, "image_mean", None),
            std=getattr(model.visual, "image_std", None),
        )
        self.image_size = _pair(model.visual.image_size)

    @classmethod
    def load(cls, settings: Settings) -> Backbone:
        """Load the configured base model, fingerprint its float32 weights, then cast to serving precision."""
        require_backbone(settings)
        register_model_configs(settings)
        device = torch.device(settings.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"RADAPTER_DEVICE={settings.device} but CUDA is not available; use cpu.")
        model = load_base_model(settings.backbone_arch, settings.backbone_pretrained, "cpu")
        model.requires_grad_(False)
        # The fingerprint must be taken before any cast: adapters record the float32 weights' hash.
        sha256 = weights_sha256(model.state_dict())
        dtype = DTYPES[settings.precision]
        model = model.to(device=device, dtype=dtype)
        logger.info(
            "backbone %s on %s (%s), weights sha256 %s", settings.backbone_arch, device, dtype, sha256
        )
        return cls(model, settings.backbone_arch, sha256, device, dtype)

    def mergeable_tensors(self) -> dict[str, torch.Tensor]:
        """Return float32 CPU copies of the tensors a merge changes (views when already float32 on CPU)."""
        return {
            name: tensor.detach().to("cpu", torch.float32)
            for name, tensor in self.model.state_dict().items()
            if name.endswith(MERGEABLE_SUFFIXES)
        }

    def tokenize(self, texts: list[str]) -> TokenizedTexts:
        """Tokenize texts to the model's context length and flag those that had to be cut."""
        ids = self.tokenizer(texts, context_length=self.context_length)
        truncated = []
        for text, row in zip(texts, ids, strict=True):
            # SimpleTokenizer ends every sequence with the end-of-text token; a cut sequence ends with it
            # in the last slot, so re-encode only those and compare lengths.
            if int(row[-1]) == 0:
                truncated.append(False)
                continue
            full = self.tokenizer([text], context_length=self.context_length * 8)[0]
            truncated.append(int(full.count_nonzero()) > self.context_length)
        return TokenizedTexts(ids=ids.long(), truncated=truncated)

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """Resize, center-crop and normalise images as open_clip does at evaluation: `(N, 3, H, W)` float32."""
        return torch.stack([self.preprocess(image) for image in images])

    def dense_pixels(self, image: Image.Image) -> torch.Tensor:
        """Resize the whole image (no crop) to the model's input size, so every output pixel has a patch."""
        height, width = self.image_size
        resized = image.resize((width, height), Image.Resampling.BICUBIC)
        mean = torch.tensor(getattr(self.model.visual, "image_mean", open_clip.OPENAI_DATASET_MEAN))
        std = torch.tensor(getattr(self.model.visual, "image_std", open_clip.OPENAI_DATASET_STD))
        tensor = torch.from_numpy(_rgb_array(resized)).permute(2, 0, 1).float() / 255.0
        return ((tensor - mean[:, None, None]) / std[:, None, None]).unsqueeze(0)

    def supports_dense(self) -> bool:
        """Tell whether per-patch embeddings are defined: a plain ViT pooled from a class token."""
        visual = self.model.visual
        return (
            getattr(visual, "attn_pool", None) is None
            and not getattr(visual, "final_ln_after_pool", False)
            and getattr(visual, "pool_type", None) == "tok"
            and getattr(visual, "proj", None) is not None
        )


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _rgb_array(image: Image.Image):
    import numpy as np

    return np.array(image.convert("RGB"), dtype=np.uint8, copy=True)


def register_model_configs(settings: Settings) -> None:
    """Add the embedded and configured model configs to open_clip and check the backbone name resolves."""
    from training import embedded

    if settings.backbone_arch == embedded.ARCHITECTURE:
        embedded.register()
    for directory in settings.model_config_dirs:
        open_clip.add_model_config(directory)
        logger.info("registered open_clip model configs from %s", directory)
    if settings.backbone_arch not in open_clip.list_models():
        raise ValueError(
            f"RADAPTER_BACKBONE_ARCH={settings.backbone_arch!r} is not an open_clip architecture; use a "
            "name from open_clip.list_models(), or put <name>.json in a directory listed in "
            "RADAPTER_MODEL_CONFIG_DIRS for a custom one."
        )


def require_backbone(settings: Settings) -> None:
    """Raise naming the environment variable or file when the backbone is not configured or missing."""
    if settings.embedded_backbone:
        _require_embedded_weights(settings)
    if not settings.backbone_arch:
        raise ValueError(
            "no backbone configured: set RADAPTER_BACKBONE_ARCH to an open_clip architecture "
            "(e.g. ViT-B-16) and RADAPTER_BACKBONE_PRETRAINED to a pretrained tag or a weights file."
        )
    if not settings.backbone_pretrained:
        raise ValueError(
            f"RADAPTER_BACKBONE_PRETRAINED is not set; give the pretrained tag or local weights file of "
            f"{settings.backbone_arch}, the weights your tenants' adapters were trained on."
        )


def _require_embedded_weights(settings: Settings) -> None:
    weights = Path(settings.backbone_pretrained)
    if not weights.is_file():
        raise FileNotFoundError(
            f"the embedded backbone's weights file {weights} does not exist. Either serve another "
            "backbone by setting RADAPTER_BACKBONE_ARCH and RADAPTER_BACKBONE_PRETRAINED, or create the "
            "weights: run `radapter pretrain` and copy the model.safetensors it writes under --out "
            f"(default runs/pretrain) to {weights}."
        )
