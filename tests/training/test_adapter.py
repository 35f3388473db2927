"""Adapter insertion, parameter accounting, Adapter Dropping, re-scaling and EMA."""

from __future__ import annotations

import open_clip
import pytest
import torch
from helpers import TINY, TINY_CUSTOM_TEXT, make_tiny_model, perturb_adapters

from training.radapter import (
    AdapterEMA,
    RAdapter,
    RAdapterConfig,
    UnsupportedModelError,
    adapter_state_dict,
    inject_adapters,
    iter_adapters,
    mark_only_adapters_trainable,
    set_alpha,
)


def encode(
    model: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(texts)


@pytest.mark.parametrize("arch", [TINY, TINY_CUSTOM_TEXT])
@pytest.mark.parametrize("rank", [None, 4])
def test_inject_adapters_fresh_adapters_are_identity(arch, rank, tiny_batch):
    base = make_tiny_model(arch)
    adapted = inject_adapters(make_tiny_model(arch), RAdapterConfig(vision_rank=rank, text_rank=rank))
    expected, actual = encode(base, *tiny_batch), encode(adapted, *tiny_batch)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    # In train mode the branch is dropped or kept at random; a zero branch must be exact either way.
    # The base also goes to train mode because eval mode takes torch's fused attention path.
    adapted.train()
    base.train()
    with torch.no_grad():
        torch.testing.assert_close(
            adapted.encode_image(tiny_batch[0]), base.encode_image(tiny_batch[0]), rtol=0, atol=0
        )


def test_inject_adapters_two_per_block(tiny_model):
    inject_adapters(tiny_model, RAdapterConfig(towers=("vision",)))
    names = [name for name, _ in iter_adapters(tiny_model)]
    assert names == [f"visual.transformer.resblocks.{i}.ls_{slot}" for i in range(2) for slot in (1, 2)]


def test_mark_only_adapters_trainable_freezes_everything_else(tiny_model):
    inject_adapters(tiny_model, RAdapterConfig(vision_rank=None, text_rank=3))
    trainable, total = mark_only_adapters_trainable(tiny_model)
    # Vision width 32, 2 blocks x 2 full-rank adapters; text width 32, 2 x 2 adapters of rank 3.
    expected = 4 * 32 * 32 + 4 * (2 * 32 * 3) + 8
    assert trainable == expected
    assert total == sum(p.numel() for p in tiny_model.parameters())
    assert not tiny_model.logit_scale.requires_grad
    assert all(not p.requires_grad for n, p in tiny_model.named_parameters() if ".ls_" not in n)


@pytest.mark.slow
def test_trainable_count_vit_b_16_full_rank():
    model = open_clip.create_model("ViT-B-16")
    inject_adapters(model, RAdapterConfig())
    trainable, _ = mark_only_adapters_trainable(model)
    scales = sum(1 for _ in iter_adapters(model))
    assert scales == 48
    assert trainable - scales == 20_447_232  # 24 * 768**2 + 24 * 512**2


def test_inject_adapters_rejects_non_transformer_tower():
    model = open_clip.create_model("RN50")
    with pytest.raises(UnsupportedModelError, match="not an open_clip Transformer"):
        inject_adapters(model, RAdapterConfig())


def test_inject_adapters_rejects_second_insertion(tiny_model):
    inject_adapters(tiny_model, RAdapterConfig())
    with pytest.raises(ValueError, match="already has an R-Adapter"):
        inject_adapters(tiny_model, RAdapterConfig())


@pytest.mark.parametrize(
    "field, value", [("drop_prob", 1.0), ("alpha", 1.5), ("vision_rank", 0), ("towers", ("audio",))]
)
def test_radapter_config_rejects_invalid_values(field, value):
    with pytest.raises(ValueError, match=field):
        RAdapterConfig(**{field: value})


def test_radapter_drops_branch_per_sample_at_requested_rate():
    torch.manual_seed(0)
    adapter = RAdapter(torch.nn.Identity(), width=8, drop_prob=0.3, batch_dim=0)
    with torch.no_grad():
        adapter.weight.copy_(torch.eye(8))
    x = torch.ones(20_000, 3, 8)

    adapter.train()
    with torch.no_grad():
        branch = adapter(x) - x  # (B, L, D): 0 where dropped, s / (1 - p) where kept
    per_sample = branch[:, 0, 0]
    assert torch.all(branch == per_sample[:, None, None]), "a sample must be dropped as a whole"
    kept = per_sample != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.015
    torch.testing.assert_close(per_sample[kept], torch.full_like(per_sample[kept], 0.1 / 0.7))

    adapter.eval()
    set_alpha(torch.nn.Sequential(adapter), 0.5)
    with torch.no_grad():
        torch.testing.assert_close(adapter(x) - x, torch.full_like(x, 0.5 * 0.1))


def test_radapter_drop_mask_follows_sequence_first_layout():
    torch.manual_seed(0)
    adapter = RAdapter(torch.nn.Identity(), width=4, drop_prob=0.5, batch_dim=1).train()
    with torch.no_grad():
        adapter.weight.copy_(torch.eye(4))
        x = torch.ones(5, 64, 4)  # (L, B, D)
        branch = adapter(x) - x
    assert torch.all(branch == branch[0:1, :, 0:1])


def test_adapter_ema_update_matches_formula(tiny_model):
    inject_adapters(tiny_model, RAdapterConfig())
    ema = AdapterEMA(tiny_model, momentum=0.9)
    before = {name: tensor.clone() for name, tensor in ema.shadow.items()}
    perturb_adapters(tiny_model)
    current = adapter_state_dict(tiny_model)
    ema.update(tiny_model)
    for name, value in ema.shadow.items():
        torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * current[name])
    assert ema.num_updates == 1


def test_adapter_ema_swapped_in_restores_live_weights(tiny_model, tiny_batch):
    inject_adapters(tiny_model, RAdapterConfig())
    ema = AdapterEMA(tiny_model, momentum=0.5)
    perturb_adapters(tiny_model)
    live = adapter_state_dict(tiny_model)
    with ema.swapped_in(tiny_model):
        inside = adapter_state_dict(tiny_model)
        for name in live:
            torch.testing.assert_close(inside[name], ema.shadow[name])
    for name, value in adapter_state_dict(tiny_model).items():
        torch.testing.assert_close(value, live[name])


def test_inject_adapters_follows_model_mode(tiny_model):
    inject_adapters(tiny_model.eval(), RAdapterConfig())
    assert all(not adapter.training for _, adapter in iter_adapters(tiny_model))


@pytest.mark.slow
def test_train_step_vit_b_16_updates_adapters():
    from training.losses import mpm_nce_loss

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16")
    inject_adapters(model, RAdapterConfig(vision_rank=16, text_rank=16))
    mark_only_adapters_trainable(model)
    ema = AdapterEMA(model)
    frozen_before = model.visual.transformer.resblocks[0].attn.out_proj.weight.clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    model.train()
    images = torch.randn(2, 3, 224, 224)
    texts = open_clip.get_tokenizer("ViT-B-16")(["a fox", "a cat"])
    image_features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    text_features = torch.nn.functional.normalize(model.encode_text(texts), dim=-1)
    loss = mpm_nce_loss(image_features, text_features, torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    ema.update(model)

    assert torch.isfinite(loss)
    assert model.logit_scale.grad is None
    torch.testing.assert_close(model.visual.transformer.resblocks[0].attn.out_proj.weight, frozen_before)
    up = model.visual.transformer.resblocks[0].ls_1.up
    assert up.abs().max() > 0, "the zero-initialised up projection must move after one step"
    assert ema.num_updates == 1
