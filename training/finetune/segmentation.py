"""Open-vocabulary segmentation: dense patch-text logits from the image tower, trained and scored per pixel.

Patch embeddings take the path of open_clip's `VisionTransformer.forward` (3.x, class-token
pooling), except that every token goes through `ln_post` and the projection, as the service's
`/segment` route does. Their cosines with the class-name embeddings (background first, so mask value
i is logit i) are upsampled bilinearly to the mask's size and scored per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.utils.data import DataLoader

from training.data.datasets import class_display_name

BACKGROUND = "background"


def segmentation_class_names(labels: Sequence[str]) -> list[str]:
    """Return the prompt names of mask values 0..C: background, then each class."""
    return [BACKGROUND, *(class_display_name(label) for label in labels)]


def patch_embeddings(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Return (B, grid_h, grid_w, D) unit patch embeddings in the joint image-text space."""
    visual = model.visual
    if not isinstance(visual, VisionTransformer) or visual.pool_type != "tok" or visual.proj is None:
        raise ValueError(
            f"segmentation needs a ViT image tower that pools its class token and projects it; "
            f"{type(visual).__name__} does not. Choose a plain open_clip ViT architecture."
        )
    tokens = visual._embeds(images)  # (B, 1 + grid_h * grid_w, width)
    tokens = visual.transformer(tokens)
    tokens = visual.ln_post(tokens)
    patches = tokens[:, 1:] @ visual.proj  # (B, grid_h * grid_w, D)

    grid_h, grid_w = visual.grid_size
    return F.normalize(patches.float().reshape(images.shape[0], grid_h, grid_w, -1), dim=-1)


def pixel_cosines(patches: torch.Tensor, texts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Return (B, K, H, W) patch-text cosines upsampled bilinearly to `size`."""
    cosines = torch.einsum("bhwd,kd->bkhw", patches, texts.float())  # (B, K, grid_h, grid_w)
    return F.interpolate(cosines, size=size, mode="bilinear", align_corners=False)


class SegmentationForward(nn.Module):
    """Return unit patch embeddings of the images and unit embeddings of the K class prompts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = patch_embeddings(self.model, images)  # (B, grid_h, grid_w, D)
        texts = F.normalize(self.model.encode_text(tokens).float(), dim=-1)  # (K, D)
        return patches, texts


def segmentation_loss(
    patches: torch.Tensor,
    texts: torch.Tensor,
    masks: torch.Tensor,
    loss: str,
    temperature: float,
    margin: float,
    label_smoothing: float,
) -> torch.Tensor:
    """Per-pixel loss of patch-text logits against a (B, H, W) mask of class indices (0 = background).

    `mpm-nce` is MPM-NCE's image-to-text half with one text per class: logits
    `(cos + margin * [k != y]) / temperature`, target `1 - eps` on the pixel's class and `eps / (K - 1)`
    on each other class. `cross-entropy` uses `cos / temperature` and PyTorch's label smoothing.
    """
    cosines = pixel_cosines(patches, texts, tuple(masks.shape[-2:]))  # (B, K, H, W)
    num_classes = cosines.shape[1]
    if loss == "cross-entropy":
        return F.cross_entropy(cosines / temperature, masks, label_smoothing=label_smoothing)
    positive = F.one_hot(masks, num_classes).permute(0, 3, 1, 2).float()  # (B, K, H, W)
    logits = (cosines + margin * (1.0 - positive)) / temperature
    negative_mass = label_smoothing / max(1, num_classes - 1)
    targets = (1.0 - label_smoothing) * positive + negative_mass * (1.0 - positive)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def confusion_matrix(masks: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Return the (K, K) count of pixels with true class i (row) and predicted class j (column)."""
    pairs = masks.reshape(-1) * num_classes + predictions.reshape(-1)
    return torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou_from_confusion(confusion: torch.Tensor) -> float:
    """Return the mean over classes of intersection over union.

    Classes (background included) that neither the masks nor the predictions contain are left out.
    """
    true_positive = confusion.diag().float()
    union = confusion.sum(dim=0).float() + confusion.sum(dim=1).float() - true_positive
    present = union > 0
    return float((true_positive[present] / union[present]).mean())


@torch.no_grad()
def mean_iou(model: nn.Module, texts: torch.Tensor, dataset, batch_size: int) -> float:
    """Return the mIoU of the argmax of pixel logits over a segmentation data set, pooled over all pixels."""
    num_classes = texts.shape[0]
    device = next(model.parameters()).device
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for images, masks in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        patches = patch_embeddings(model, images.to(device)).cpu()  # (B, grid_h, grid_w, D)
        cosines = pixel_cosines(patches, texts.cpu(), tuple(masks.shape[-2:]))  # (B, K, H, W)
        confusion += confusion_matrix(masks, cosines.argmax(dim=1), num_classes)
    return mean_iou_from_confusion(confusion)
