"""MPM-NCE under torch.distributed: two gloo processes equal one process on the same global batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from training.losses import info_nce_loss, mpm_nce_loss

GLOBAL_BATCH = 8


def global_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(GLOBAL_BATCH, 6, generator=generator)
    texts = torch.randn(GLOBAL_BATCH, 6, generator=generator)
    labels = torch.tensor([0, 1, 1, 2, 0, 3, 2, 2])  # positives span both ranks
    return images, texts, labels


def losses_and_gradients(images, texts, labels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = images.clone().requires_grad_()
    image_features = F.normalize(images, dim=-1)
    text_features = F.normalize(texts, dim=-1)
    loss = mpm_nce_loss(image_features, text_features, labels, temperature=0.05)
    plain = info_nce_loss(image_features, text_features, logit_scale=20.0)
    (loss + plain).backward()
    return loss.detach(), plain.detach(), images.grad


def worker(rank: int, world_size: int, port: int, output_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        images, texts, labels = global_inputs()
        shard = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
        loss, plain, grad = losses_and_gradients(images[shard], texts[shard], labels[shard])
        # Averaging the local losses over ranks gives the global loss, as DistributedDataParallel
        # does for parameter gradients.
        for tensor in (loss, plain):
            dist.all_reduce(tensor)
            tensor /= world_size
        torch.save((loss, plain, grad), os.path.join(output_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mpm_nce_loss_two_processes(tmp_path):
    expected_loss, expected_plain, expected_grad = losses_and_gradients(*global_inputs())

    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)

    grads = []
    for rank in range(2):
        loss, plain, grad = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(loss, expected_loss)
        torch.testing.assert_close(plain, expected_plain)
        grads.append(grad)
    # Each rank's shard receives the gradient of the sum of both local losses, which is
    # world_size times the gradient of the global mean loss.
    torch.testing.assert_close(torch.cat(grads) / 2, expected_grad)
