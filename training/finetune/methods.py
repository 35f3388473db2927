"""Fine-tuning methods: what each one makes trainable, what its forward pass returns, what it saves.

- `r-adapter`: R-Adapters in both towers, everything else frozen, EMA of the adapter weights.
- `full-ft`: every weight (image tower and a zero-shot-initialised head for classification, as in
  WiSE-FT; both towers for retrieval). `logit_scale` stays frozen.
- `lora`: rank-r updates `W + (alpha / r) B A` of `attn.in_proj_weight`, `attn.out_proj`,
  `mlp.c_fc` and `mlp.c_proj` in both towers, merged into the weights at the end.
- `linear-probe`: a zero-shot-initialised class head on frozen image embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from training.radapter import (
    AdapterEMA,
    RAdapterConfig,
    inject_adapters,
    mark_only_adapters_trainable,
    tower_transformers,
)

from .config import TrainConfig
from .segmentation import SegmentationForward


class ContrastiveForward(nn.Module):
    """Return unit image and text embeddings of paired inputs, for MPM-NCE or InfoNCE."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_features = F.normalize(self.model.encode_image(images).float(), dim=-1)  # (B, D)
        text_features = F.normalize(self.model.encode_text(tokens).float(), dim=-1)  # (B, D)
        return image_features, text_features


class HeadForward(nn.Module):
    """Return class logits `logit_scale * normalize(encode_image(x)) @ head.T` for cross-entropy.

    The head has one row per class and no bias, so the zero-shot head (unit class embeddings) is a
    valid initial value and WiSE-FT can interpolate it with the fine-tuned head.
    """

    def __init__(self, model: nn.Module, head: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.head = nn.Parameter(head.clone())  # (C, D)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image_features = F.normalize(self.model.encode_image(images).float(), dim=-1)  # (B, D)
        logit_scale = self.model.logit_scale.detach().exp().float()
        return logit_scale * image_features @ self.head.T  # (B, C)


@dataclass
class PreparedModel:
    """The open_clip model as trained, the module the loop runs forward through, and the EMA."""

    model: nn.Module
    forward: nn.Module
    ema: AdapterEMA | None = None

    @property
    def uses_head(self) -> bool:
        return isinstance(self.forward, HeadForward)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {
            name: parameter for name, parameter in self.forward.named_parameters() if parameter.requires_grad
        }


def radapter_config(config: TrainConfig) -> RAdapterConfig:
    """Return the adapter settings of a training config."""
    return RAdapterConfig(
        vision_rank=config.vision_rank,
        text_rank=config.text_rank,
        drop_prob=config.drop_prob,
        ema_momentum=config.ema_momentum,
        alpha=config.alpha,
    )


def prepare_model(
    model: nn.Module, config: TrainConfig, zero_shot_head: torch.Tensor | None
) -> PreparedModel:
    """Make the parameters of `config.method` trainable (in place) and wrap the model for training.

    Args:
        model: A plain open_clip model straight from `load_base_model`.
        config: The run's configuration.
        zero_shot_head: (C, D) unit class embeddings; required by methods that train a head.
    """
    needs_head = config.trains_head
    if needs_head and zero_shot_head is None:
        raise ValueError(
            f"method {config.method!r} with cross-entropy needs a zero-shot head; pass the class names."
        )

    pair_forward = SegmentationForward if config.task == "segmentation" else ContrastiveForward
    if config.method == "r-adapter":
        inject_adapters(model, radapter_config(config))
        mark_only_adapters_trainable(model)
        return PreparedModel(model, pair_forward(model), AdapterEMA(model, config.ema_momentum))

    if config.method == "lora":
        inject_lora(model, config.lora_rank, config.lora_alpha)
        return PreparedModel(model, pair_forward(model))

    for parameter in model.parameters():
        parameter.requires_grad_(config.method == "full-ft")
    model.logit_scale.requires_grad_(False)
    if not needs_head:
        return PreparedModel(model, pair_forward(model))

    # A head-trained model never runs its text tower, so only the image tower (full-ft) or
    # nothing (linear-probe) of the backbone trains.
    for name, parameter in model.named_parameters():
        if not name.startswith("visual."):
            parameter.requires_grad_(False)
    return PreparedModel(model, HeadForward(model, zero_shot_head))


class LoRAUpdate(nn.Module):
    """Parametrization `W -> W + (lora_alpha / rank) * up @ down` of a (out, in) weight matrix.

    `up` starts at zero so a fresh update leaves the model unchanged (Hu et al., LoRA, 2021).
    """

    def __init__(self, out_features: int, in_features: int, rank: int, lora_alpha: float) -> None:
        super().__init__()
        if not 1 <= rank <= min(out_features, in_features):
            raise ValueError(
                f"lora_rank={rank} is invalid for a {out_features} x {in_features} weight; "
                f"use 1..{min(out_features, in_features)}."
            )
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.scaling = lora_alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scaling * (self.up @ self.down).to(weight.dtype)


def lora_targets(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Return `(module, weight name)` of every projection LoRA adapts, in both towers."""
    targets = []
    for _, (_, transformer) in tower_transformers(model).items():
        for block in transformer.resblocks:
            if not isinstance(block.attn, nn.MultiheadAttention) or not block.attn._qkv_same_embed_dim:
                raise ValueError(
                    "LoRA supports open_clip blocks with a packed nn.MultiheadAttention, "
                    f"not {type(block.attn).__name__}."
                )
            targets.append((block.attn, "in_proj_weight"))  # q, k and v stacked: (3 d, d)
            targets.append((block.attn.out_proj, "weight"))
            targets.append((block.mlp.c_fc, "weight"))
            targets.append((block.mlp.c_proj, "weight"))
    return targets


def inject_lora(model: nn.Module, rank: int, lora_alpha: float) -> None:
    """Freeze the model and add a trainable LoRA update to every target projection, in place."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for module, name in lora_targets(model):
        weight = getattr(module, name)
        update = LoRAUpdate(weight.shape[0], weight.shape[1], rank, lora_alpha).to(weight.device)
        parametrize.register_parametrization(module, name, update)


def merged_lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return a plain open_clip state dict with every LoRA update folded into its weight.

    The model keeps its parametrizations. Removing them from a deep copy would not do, because the
    copy shares the parametrized classes and removal deletes the weight property from the class.
    """
    folded = {}  # state-dict prefix of a parametrization -> (plain key, merged weight)
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for name in module.parametrizations:
            prefix = f"{module_name}.parametrizations.{name}."
            folded[prefix] = (f"{module_name}.{name}", getattr(module, name).detach().clone())

    merged = {}
    for key, tensor in model.state_dict().items():
        prefix = next((candidate for candidate in folded if key.startswith(candidate)), None)
        if prefix is None:
            merged[key] = tensor.detach()
        elif key == prefix + "original":
            plain_key, weight = folded[prefix]
            merged[plain_key] = weight
        # The LoRA factors (`<prefix>0.down`, `<prefix>0.up`) are already folded into the weight.
    return merged
