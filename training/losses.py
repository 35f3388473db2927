"""Contrastive and classification losses: MPM-NCE, symmetric InfoNCE, label-smoothed cross-entropy."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _AllGatherWithGradient(torch.autograd.Function):
    """Concatenate equal-sized shards from all ranks, keeping the autograd graph.

    The backward pass sums the gradient over ranks and returns each rank its own slice, so a loss
    computed on every rank trains every shard.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(shards, tensor.contiguous())
        return torch.cat(shards, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_features(
    image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All-gather features (keeping gradients) and labels when torch.distributed is initialised.

    Every rank must pass the same local batch size. Returns the global tensors in rank order;
    without a process group the inputs come back unchanged.
    """
    if not is_distributed():
        return image_features, text_features, labels
    label_shards = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(label_shards, labels.contiguous())
    all_images = _AllGatherWithGradient.apply(image_features)
    all_texts = _AllGatherWithGradient.apply(text_features)
    return all_images, all_texts, torch.cat(label_shards, dim=0)


def soft_targets(
    row_labels: torch.Tensor, column_labels: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Return MPM-NCE targets: `(1 - eps) / |P|` on each positive, `eps / (N - |P|)` on each negative.

    A row without negatives (every label equal) puts all its mass on the positives, so the
    targets always sum to one.
    """
    positive = (row_labels[:, None] == column_labels[None, :]).float()  # (R, C)
    num_positive = positive.sum(dim=1, keepdim=True)
    num_negative = positive.shape[1] - num_positive
    has_negative = num_negative > 0
    positive_mass = torch.where(has_negative, 1.0 - label_smoothing, 1.0)
    negative_mass = torch.where(has_negative, label_smoothing / num_negative.clamp(min=1), 0.0)
    return positive * positive_mass / num_positive + (1.0 - positive) * negative_mass


def mpm_nce_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.01,
    margin: float = 0.05,
    label_smoothing: float = 0.02,
) -> torch.Tensor:
    """Multi-positive margin NCE between L2-normalised image and text features.

    Pairs `i` and `j` are positives when `labels[i] == labels[j]` (the same class, or the same image
    for retrieval). Negatives get an additive cosine margin, so logits are
    `(cos_ij + margin * [y_i != y_j]) / temperature`. The loss is the mean of the image-to-text and
    text-to-image soft cross-entropies, over the local rows against all gathered columns when
    torch.distributed is initialised.

    Args:
        image_features: (N, D) L2-normalised image embeddings.
        text_features: (N, D) L2-normalised text embeddings; row `i` pairs with image `i`.
        labels: (N,) integer labels.
        temperature: fixed softmax temperature tau (CLIP's trained value is 0.01).
        margin: additive cosine margin delta on negatives.
        label_smoothing: total target mass eps spread over the negatives.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing!r} is invalid; it must lie in [0, 1).")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature!r} is invalid; it must be positive.")
    all_images, all_texts, all_labels = gather_features(image_features, text_features, labels)

    targets = soft_targets(labels, all_labels, label_smoothing)  # (N, N_global)
    negative = (labels[:, None] != all_labels[None, :]).to(image_features.dtype)

    logits_per_image = (image_features @ all_texts.T + margin * negative) / temperature
    logits_per_text = (text_features @ all_images.T + margin * negative) / temperature

    loss_image = -(targets * F.log_softmax(logits_per_image, dim=1)).sum(dim=1).mean()
    loss_text = -(targets * F.log_softmax(logits_per_text, dim=1)).sum(dim=1).mean()
    return (loss_image + loss_text) / 2


def info_nce_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss): pair `i` is the only positive of row `i`.

    Under torch.distributed the local rows are scored against all gathered columns.
    """
    offset = dist.get_rank() * image_features.shape[0] if is_distributed() else 0
    labels = torch.arange(image_features.shape[0], device=image_features.device) + offset
    all_images, all_texts, _ = gather_features(image_features, text_features, labels)

    logits_per_image = logit_scale * image_features @ all_texts.T
    logits_per_text = logit_scale * text_features @ all_images.T
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


class ClassificationLoss(nn.Module):
    """Cross-entropy with label smoothing over class logits, for heads such as WiSE-FT's."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing!r} is invalid; it must lie in [0, 1).")
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
