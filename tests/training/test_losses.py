"""MPM-NCE, InfoNCE and label-smoothed cross-entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.losses import ClassificationLoss, info_nce_loss, mpm_nce_loss, soft_targets


def normalised(rows: list[list[float]]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=-1)


def test_mpm_nce_loss_matches_hand_computed_case():
    # Three pairs, labels [0, 0, 1]: pairs 0 and 1 are positives of each other.
    images = normalised([[1, 0], [0, 1], [1, 1]])
    texts = normalised([[1, 0], [1, 0], [0, 1]])
    labels = torch.tensor([0, 0, 1])
    tau, delta, eps = 0.5, 0.1, 0.2

    cos = images @ texts.T
    negative = torch.tensor([[0, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.float64)
    targets = torch.tensor(
        [
            [0.4, 0.4, 0.2],  # (1 - eps) / 2 on two positives, eps / 1 on one negative
            [0.4, 0.4, 0.2],
            [0.1, 0.1, 0.8],  # eps / 2 on two negatives, (1 - eps) on one positive
        ],
        dtype=torch.float64,
    )
    expected = 0.0
    for logits in ((cos + delta * negative) / tau, (cos.T + delta * negative) / tau):
        log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        expected += -(targets * log_probs).sum(dim=1).mean() / 2

    actual = mpm_nce_loss(images, texts, labels, temperature=tau, margin=delta, label_smoothing=eps)
    torch.testing.assert_close(actual, expected)


def test_mpm_nce_loss_single_label_batch():
    images = normalised([[1, 0], [0, 1], [1, 1]])
    labels = torch.zeros(3, dtype=torch.long)
    targets = soft_targets(labels, labels, label_smoothing=0.02)
    torch.testing.assert_close(targets, torch.full((3, 3), 1 / 3))
    loss = mpm_nce_loss(images, images, labels)
    assert torch.isfinite(loss)
    # All targets uniform: the loss is the cross-entropy against a uniform distribution, at least log 3.
    assert loss.item() >= math.log(3) - 1e-9


def test_mpm_nce_loss_reduces_to_info_nce():
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    labels = torch.arange(6)
    expected = info_nce_loss(images, texts, logit_scale=100.0)
    actual = mpm_nce_loss(images, texts, labels, temperature=0.01, margin=0.0, label_smoothing=0.0)
    torch.testing.assert_close(actual, expected)


def test_soft_targets_rows_sum_to_one():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    targets = soft_targets(labels, labels, label_smoothing=0.1)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(6))


def test_mpm_nce_loss_single_label_gradient():
    images = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    loss = mpm_nce_loss(images, images.detach(), torch.ones(4, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(images.grad).all()


def test_classification_loss_applies_label_smoothing():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    labels = torch.tensor([0])
    log_probs = F.log_softmax(logits, dim=1)
    expected = -(0.9 + 0.1 / 3) * log_probs[0, 0] - (0.1 / 3) * (log_probs[0, 1] + log_probs[0, 2])
    torch.testing.assert_close(ClassificationLoss(label_smoothing=0.1)(logits, labels), expected)
