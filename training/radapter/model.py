"""Insert R-Adapters into open_clip models, freeze the rest, and merge adapters back into plain weights."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from open_clip.transformer import Transformer
from torch import nn

from .config import RAdapterConfig
from .layer import RAdapter

logger = logging.getLogger(__name__)


class UnsupportedModelError(ValueError):
    """The model's structure does not allow exact R-Adapter insertion and merging."""


# Each adapter slot and the pretrained linear layer whose output it adapts, relative to a block.
SLOT_TARGETS = {"ls_1": "attn.out_proj", "ls_2": "mlp.c_proj"}


def tower_transformers(model: nn.Module) -> dict[str, tuple[str, Transformer]]:
    """Return `{tower: (module path, Transformer)}` for the vision and text towers of an open_clip model.

    Raises:
        UnsupportedModelError: a tower is not an open_clip `Transformer` (timm or Hugging Face towers,
            ResNets).
    """
    visual = getattr(model, "visual", None)
    if hasattr(model, "text"):  # CustomTextCLIP keeps its text tower under `text`
        text_path, text = "text.transformer", getattr(model.text, "transformer", model.text)
    else:  # CLIP exposes the text tower's blocks as `transformer`
        text_path, text = "transformer", getattr(model, "transformer", None)
    towers = {
        "vision": ("visual.transformer", getattr(visual, "transformer", visual)),
        "text": (text_path, text),
    }
    for tower, (path, module) in towers.items():
        if not isinstance(module, Transformer):
            raise UnsupportedModelError(
                f"the {tower} tower at '{path}' is {type(module).__name__}, not an open_clip Transformer; "
                "R-Adapter supports ViT vision towers and open_clip text towers only. "
                "Choose an open_clip architecture without timm or Hugging Face towers."
            )
    return towers


def _check_block(block: nn.Module, path: str) -> None:
    ln_attn = getattr(block, "ln_attn", None)
    if ln_attn is not None and not isinstance(ln_attn, nn.Identity):
        # A LayerNorm between out_proj and the adapter would make the merge inexact.
        raise UnsupportedModelError(
            f"block '{path}' normalises the attention output (scale_attn=True); the adapter could not be "
            "merged into attn.out_proj. Use an architecture without scale_attn."
        )
    for slot in SLOT_TARGETS:
        if isinstance(getattr(block, slot), RAdapter):
            raise ValueError(
                f"block '{path}' already has an R-Adapter in '{slot}'; insert adapters only once."
            )


def inject_adapters(model: nn.Module, config: RAdapterConfig) -> nn.Module:
    """Insert two R-Adapters per residual block of the configured towers, in place.

    The model must come straight from open_clip: adapters replace the `ls_1` / `ls_2` modules.
    Returns the same model for chaining.
    """
    towers = tower_transformers(model)
    for tower in config.towers:
        path, transformer = towers[tower]
        batch_dim = 0 if transformer.batch_first else 1
        for index, block in enumerate(transformer.resblocks):
            _check_block(block, f"{path}.resblocks.{index}")
            for slot in SLOT_TARGETS:
                adapter = RAdapter(
                    base_layer=getattr(block, slot),
                    width=transformer.width,
                    rank=config.rank_for(tower),
                    drop_prob=config.drop_prob,
                    init_scale=config.init_scale,
                    batch_dim=batch_dim,
                )
                adapter.to(block.mlp.c_proj.weight.device)
                adapter.train(block.training)  # a new module starts in train mode; follow the model's mode
                setattr(block, slot, adapter)
    set_alpha(model, config.alpha)
    return model


def iter_adapters(model: nn.Module) -> Iterator[tuple[str, RAdapter]]:
    """Yield `(module path, adapter)` for every R-Adapter in the model."""
    for name, module in model.named_modules():
        if isinstance(module, RAdapter):
            yield name, module


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Return the state-dict names of all adapter parameters (weights and scales, not base layers)."""
    names = []
    for path, adapter in iter_adapters(model):
        for name, _ in adapter.named_parameters(recurse=False):
            names.append(f"{path}.{name}")
    return names


def mark_only_adapters_trainable(model: nn.Module) -> tuple[int, int]:
    """Freeze every parameter except the adapters' (`logit_scale` included).

    Returns:
        `(trainable, total)` parameter counts.
    """
    trainable = set(adapter_parameter_names(model))
    if not trainable:
        raise ValueError("the model has no R-Adapters; call inject_adapters first.")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    counts = count_parameters(model)
    logger.info("trainable parameters: %d of %d (%.2f%%)", counts[0], counts[1], 100 * counts[0] / counts[1])
    return counts


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return `(trainable, total)` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def set_alpha(model: nn.Module, alpha: float) -> None:
    """Set the evaluation re-scaling factor of every adapter."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} is invalid; it must lie in [0, 1].")
    for _, adapter in iter_adapters(model):
        adapter.alpha = float(alpha)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return detached copies of all adapter parameters, keyed by their model state-dict names."""
    parameters = dict(model.named_parameters())
    return {name: parameters[name].detach().clone() for name in adapter_parameter_names(model)}


def load_adapter_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors into the model's adapters, requiring exactly matching names and shapes."""
    parameters = dict(model.named_parameters())
    expected = adapter_parameter_names(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"adapter tensors do not match the model's adapters: missing {missing[:4]} "
            f"({len(missing)} in all), unexpected {unexpected[:4]} ({len(unexpected)} in all). "
            "Check that the adapter was trained with the same towers and ranks."
        )
    with torch.no_grad():
        for name in expected:
            target = parameters[name]
            if target.shape != tensors[name].shape:
                raise ValueError(
                    f"adapter tensor '{name}' has shape {tuple(tensors[name].shape)}, "
                    f"the model expects {tuple(target.shape)}; the ranks or the base model differ."
                )
            target.copy_(tensors[name])


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the model's state dict without adapters, with keys as in the plain open_clip model."""
    adapter_names = set(adapter_parameter_names(model))
    plain = {}
    for name, tensor in model.state_dict().items():
        if name in adapter_names:
            continue
        plain[name.replace(".base_layer.", ".")] = tensor
    return plain


def merged_delta_matrices(
    adapter_tensors: dict[str, torch.Tensor], alpha: float, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Return `M = I + alpha * s * F` for every adapter, keyed by the linear layer it merges into.

    Adapters are recognised by their tensor names (`<block>.ls_1.weight` for full rank,
    `<block>.ls_1.up` / `.down` for low rank, `<block>.ls_1.scale`), so no model is needed.
    """
    prefixes = sorted({name.rsplit(".", 1)[0] for name in adapter_tensors})
    matrices = {}
    for prefix in prefixes:
        block, slot = prefix.rsplit(".", 1)
        if slot not in SLOT_TARGETS:
            raise ValueError(
                f"adapter tensor prefix '{prefix}' does not end in one of {sorted(SLOT_TARGETS)}."
            )
        scale = adapter_tensors[f"{prefix}.scale"].to(dtype)
        if f"{prefix}.weight" in adapter_tensors:
            delta = adapter_tensors[f"{prefix}.weight"].to(dtype)
        else:
            delta = adapter_tensors[f"{prefix}.up"].to(dtype) @ adapter_tensors[f"{prefix}.down"].to(dtype)
        identity = torch.eye(delta.shape[0], dtype=dtype, device=delta.device)
        matrices[f"{block}.{SLOT_TARGETS[slot]}"] = identity + alpha * scale * delta
    return matrices


def merge_overlay(
    base_tensors: dict[str, torch.Tensor],
    adapter_tensors: dict[str, torch.Tensor],
    alpha: float,
    compute_dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Return the merged `out_proj` / `c_proj` weights and biases, the only tensors a merge changes.

    With `M = I + alpha * s * F`, the layer `y = W x + b` followed by the adapter becomes
    `y = (M W) x + M b`. The product is computed in `compute_dtype` (float32 or wider) and cast back
    to each base tensor's dtype.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} is invalid; it must lie in [0, 1].")
    overlay = {}
    for layer, matrix in merged_delta_matrices(adapter_tensors, alpha, compute_dtype).items():
        for kind in ("weight", "bias"):
            key = f"{layer}.{kind}"
            if key not in base_tensors:
                raise ValueError(f"the base model has no tensor '{key}' to merge the adapter into.")
            base = base_tensors[key]
            merged = matrix.to(base.device) @ base.to(compute_dtype)  # (d, d) @ (d, in) or (d,)
            overlay[key] = merged.to(base.dtype)
    return overlay


def merged_state_dict(model: nn.Module, alpha: float | None = None) -> dict[str, torch.Tensor]:
    """Return a plain open_clip state dict with every adapter of `model` folded in at `alpha`.

    `alpha` defaults to the adapters' current re-scaling factor. Load EMA weights into the model
    first (see `AdapterEMA.swapped_in`) to merge the averaged adapters.
    """
    adapters = dict(iter_adapters(model))
    if not adapters:
        raise ValueError("the model has no R-Adapters to merge.")
    if alpha is None:
        alpha = next(iter(adapters.values())).alpha
    plain = base_state_dict(model)
    plain.update(merge_overlay(plain, adapter_state_dict(model), alpha))
    return plain


def merge_and_unload(model: nn.Module, alpha: float | None = None) -> nn.Module:
    """Fold every adapter into its linear layer and restore the plain open_clip modules, in place."""
    merged = merged_state_dict(model, alpha)
    for path, adapter in list(iter_adapters(model)):
        parent_path, slot = path.rsplit(".", 1)
        setattr(model.get_submodule(parent_path), slot, adapter.base_layer)
    model.load_state_dict(merged, strict=True)
    return model
