"""Merge contract: unmerged == merged (in stock open_clip) == reloaded, != base; alpha is WiSE-FT."""

from __future__ import annotations

import open_clip
import pytest
import torch
from helpers import TINY, TINY_CUSTOM_TEXT, make_tiny_model, perturb_adapters, save_weights

from training.cli import main
from training.models import weights_sha256
from training.radapter import (
    AdapterEMA,
    AdapterMetadata,
    RAdapterConfig,
    adapter_state_dict,
    inject_adapters,
    load_adapter,
    load_adapter_state_dict,
    merge_and_unload,
    merged_state_dict,
    save_adapter,
    set_alpha,
)

CONFIGS = {
    "full-rank": RAdapterConfig(alpha=0.7),
    "low-rank": RAdapterConfig(vision_rank=4, text_rank=2, alpha=0.7),
    "vision-only": RAdapterConfig(towers=("vision",), alpha=0.7),
}


def encode(
    model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.encode_image(batch[0]), model.encode_text(batch[1])


def adapted_model(arch: str, config: RAdapterConfig) -> torch.nn.Module:
    model = inject_adapters(make_tiny_model(arch), config)
    perturb_adapters(model)
    return model.eval()


@pytest.mark.parametrize("arch", [TINY, TINY_CUSTOM_TEXT])
@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_merged_state_dict_matches_unmerged_and_reloaded(arch, config_name, tiny_batch, tmp_path):
    config = CONFIGS[config_name]
    base = make_tiny_model(arch)
    model = adapted_model(arch, config)
    unmerged = encode(model, tiny_batch)

    merged_path = tmp_path / "merged.safetensors"
    save_weights_from_dict(merged_state_dict(model), merged_path)
    stock = open_clip.create_model(arch, pretrained=str(merged_path)).eval()  # strict keys by default
    merged = encode(stock, tiny_batch)

    metadata = AdapterMetadata(arch, weights_sha256(base.state_dict()), config, task="retrieval")
    save_adapter(tmp_path / "adapter", adapter_state_dict(model), metadata)
    tensors, loaded_metadata = load_adapter(tmp_path / "adapter")
    reloaded_model = inject_adapters(make_tiny_model(arch), loaded_metadata.config).eval()
    load_adapter_state_dict(reloaded_model, tensors)
    reloaded = encode(reloaded_model, tiny_batch)

    # Merging reorders float32 sums (M W x instead of W x then M), hence atol 1e-5 instead of exact.
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reloaded, unmerged, rtol=0, atol=0)
    base_out = encode(base, tiny_batch)
    assert (unmerged[0] - base_out[0]).abs().max() > 1e-3
    if "text" in config.towers:
        assert (unmerged[1] - base_out[1]).abs().max() > 1e-3


def save_weights_from_dict(state: dict[str, torch.Tensor], path) -> None:
    from safetensors.torch import save_file

    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(path))


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_merged_state_dict_alpha_is_wise_ft(config_name):
    base_state = make_tiny_model().state_dict()
    model = adapted_model(TINY, CONFIGS[config_name])
    at_zero = merged_state_dict(model, alpha=0.0)
    at_one = merged_state_dict(model, alpha=1.0)
    at_alpha = merged_state_dict(model, alpha=0.3)
    for name, tensor in base_state.items():
        torch.testing.assert_close(at_zero[name], tensor, rtol=0, atol=0)
        torch.testing.assert_close(at_alpha[name], 0.7 * tensor + 0.3 * at_one[name], rtol=1e-5, atol=1e-6)
    changed = [name for name in base_state if not torch.equal(at_one[name], base_state[name])]
    assert changed and all(
        name.endswith(("out_proj.weight", "out_proj.bias", "c_proj.weight", "c_proj.bias"))
        for name in changed
    )


def test_merge_and_unload_keeps_outputs(tiny_batch):
    model = adapted_model(TINY, CONFIGS["low-rank"])
    expected = encode(model, tiny_batch)
    merge_and_unload(model)
    assert set(model.state_dict()) == set(make_tiny_model().state_dict())
    torch.testing.assert_close(encode(model, tiny_batch), expected, rtol=1e-4, atol=1e-5)


def test_eval_output_at_alpha_matches_merge_at_alpha(tiny_batch, tmp_path):
    model = adapted_model(TINY, CONFIGS["full-rank"])
    set_alpha(model, 0.25)
    expected = encode(model, tiny_batch)
    path = tmp_path / "merged.safetensors"
    save_weights_from_dict(merged_state_dict(model), path)
    stock = open_clip.create_model(TINY, pretrained=str(path)).eval()
    torch.testing.assert_close(encode(stock, tiny_batch), expected, rtol=1e-4, atol=1e-5)


def test_merge_uses_ema_weights_inside_swapped_in(tiny_batch):
    model = adapted_model(TINY, CONFIGS["full-rank"])
    ema = AdapterEMA(model, momentum=0.5)  # shadow starts at the perturbed weights
    perturb_adapters(model, seed=1)
    ema.update(model)
    with ema.swapped_in(model):
        merged = merged_state_dict(model)
        expected = encode(model, tiny_batch)
    stock = make_tiny_model()
    stock.load_state_dict(merged)
    torch.testing.assert_close(encode(stock, tiny_batch), expected, rtol=1e-4, atol=1e-5)


def write_adapter(tmp_path, config: RAdapterConfig, base: torch.nn.Module):
    model = inject_adapters(make_tiny_model(), config)
    perturb_adapters(model)
    metadata = AdapterMetadata(TINY, weights_sha256(base.state_dict()), config, task="retrieval")
    save_adapter(tmp_path / "adapter", adapter_state_dict(model), metadata)
    return model.eval()


@pytest.mark.parametrize("config_name", ["full-rank", "low-rank"])
def test_cli_merge_writes_file_stock_open_clip_loads(config_name, tiny_batch, tmp_path):
    base = make_tiny_model()
    base_path = save_weights(base, tmp_path / "base.safetensors")
    model = write_adapter(tmp_path, CONFIGS[config_name], base)
    output = tmp_path / "out" / "merged.safetensors"

    code = main(
        [
            "merge",
            "--adapter",
            str(tmp_path / "adapter"),
            "--pretrained",
            str(base_path),
            "--alpha",
            "0.4",
            "--output",
            str(output),
        ]
    )

    assert code == 0
    set_alpha(model, 0.4)
    stock = open_clip.create_model(TINY, pretrained=str(output)).eval()
    torch.testing.assert_close(encode(stock, tiny_batch), encode(model, tiny_batch), rtol=1e-4, atol=1e-5)


def test_cli_merge_rejects_other_base_weights(tmp_path, capsys):
    base = make_tiny_model(seed=0)
    write_adapter(tmp_path, CONFIGS["full-rank"], base)
    other = make_tiny_model(seed=1)
    other_path = save_weights(other, tmp_path / "other.safetensors")

    code = main(
        [
            "merge",
            "--adapter",
            str(tmp_path / "adapter"),
            "--pretrained",
            str(other_path),
            "--output",
            str(tmp_path / "m.safetensors"),
        ]
    )

    assert code == 2
    error = capsys.readouterr().err
    assert weights_sha256(base.state_dict()) in error
    assert weights_sha256(other.state_dict()) in error
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--alpha", "1.5"], "--alpha 1.5"),
        (["--output-name", "merged.pt"], "must end in .safetensors"),
        (["--pretrained-name", "missing.safetensors"], "does not exist"),
    ],
)
def test_cli_merge_rejects_bad_arguments(arguments, message, tmp_path, capsys):
    base = make_tiny_model()
    base_path = save_weights(base, tmp_path / "base.safetensors")
    write_adapter(tmp_path, CONFIGS["full-rank"], base)
    options = {"--pretrained": str(base_path), "--output": str(tmp_path / "m.safetensors"), "--alpha": "0.5"}
    if arguments[0] == "--output-name":
        options["--output"] = str(tmp_path / arguments[1])
    elif arguments[0] == "--pretrained-name":
        options["--pretrained"] = str(tmp_path / arguments[1])
    else:
        options[arguments[0]] = arguments[1]
    argv = ["merge", "--adapter", str(tmp_path / "adapter")] + [
        item for pair in options.items() for item in pair
    ]

    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_merge_vit_b_16_low_rank(tmp_path):
    torch.manual_seed(0)
    base = open_clip.create_model("ViT-B-16").eval()
    model = open_clip.create_model("ViT-B-16").eval()
    model.load_state_dict(base.state_dict())
    inject_adapters(model, RAdapterConfig(vision_rank=8, text_rank=8, alpha=0.5))
    perturb_adapters(model, std=0.02)
    images = torch.randn(2, 3, 224, 224)
    texts = open_clip.get_tokenizer("ViT-B-16")(["a photo of a fox", "a diagram"])
    expected = encode(model, (images, texts))

    path = tmp_path / "merged.safetensors"
    save_weights_from_dict(merged_state_dict(model), path)
    stock = open_clip.create_model("ViT-B-16", pretrained=str(path)).eval()
    # Twelve 768-wide blocks accumulate float32 reordering error, hence a looser atol than the tiny model.
    torch.testing.assert_close(encode(stock, (images, texts)), expected, rtol=1e-3, atol=1e-4)
    assert (expected[0] - encode(base, (images, texts))[0]).abs().max() > 1e-3


def test_merge_overlay_keeps_base_dtype():
    from training.radapter import merge_overlay

    model = adapted_model(TINY, CONFIGS["full-rank"])
    base_bf16 = {name: tensor.to(torch.bfloat16) for name, tensor in make_tiny_model().state_dict().items()}
    overlay = merge_overlay(base_bf16, adapter_state_dict(model), alpha=0.5)
    reference = merge_overlay(make_tiny_model().state_dict(), adapter_state_dict(model), alpha=0.5)
    for name, tensor in overlay.items():
        assert tensor.dtype == torch.bfloat16
        # One bf16 rounding of the float32 result: relative error about 2**-8.
        torch.testing.assert_close(tensor.float(), reference[name], rtol=2e-2, atol=2e-3)


def test_cli_merge_rejects_weights_of_another_architecture(tmp_path, capsys):
    base = make_tiny_model()
    write_adapter(tmp_path, CONFIGS["full-rank"], base)
    other = save_weights(make_tiny_model(TINY_CUSTOM_TEXT), tmp_path / "other-arch.safetensors")
    argv = ["merge", "--adapter", str(tmp_path / "adapter"), "--pretrained", str(other)]

    assert main(argv + ["--output", str(tmp_path / "m.safetensors")]) == 2
    assert "could not load weights" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"not a safetensors header", b"\x80\x04\x95 not a pickle"])
def test_cli_merge_rejects_corrupt_base_weights(content, tmp_path, capsys):
    base = make_tiny_model()
    write_adapter(tmp_path, CONFIGS["full-rank"], base)
    suffix = ".safetensors" if content.startswith(b"not") else ".pt"
    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(content)
    argv = ["merge", "--adapter", str(tmp_path / "adapter"), "--pretrained", str(corrupt)]

    assert main(argv + ["--output", str(tmp_path / "m.safetensors")]) == 2
    assert "could not load weights" in capsys.readouterr().err


def test_cli_merge_rejects_unusable_output_before_loading(tmp_path, capsys):
    base = make_tiny_model()
    base_path = save_weights(base, tmp_path / "base.safetensors")
    write_adapter(tmp_path, CONFIGS["full-rank"], base)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir.safetensors").mkdir()
    argv = ["merge", "--adapter", str(tmp_path / "adapter"), "--pretrained", str(base_path), "--output"]

    assert main(argv + [str(tmp_path / "a-file" / "m.safetensors")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(argv + [str(tmp_path / "a-dir.safetensors")]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_cli_merge_output_is_readable_by_other_users(tmp_path):
    base = make_tiny_model()
    base_path = save_weights(base, tmp_path / "base.safetensors")
    write_adapter(tmp_path, CONFIGS["full-rank"], base)
    output = tmp_path / "m.safetensors"

    main(
        [
            "merge",
            "--adapter",
            str(tmp_path / "adapter"),
            "--pretrained",
            str(base_path),
            "--output",
            str(output),
        ]
    )

    assert output.stat().st_mode & 0o044 == 0o044
    assert (tmp_path / "adapter" / "adapter.json").stat().st_mode & 0o044 == 0o044


def test_cli_resolves_architectures_from_model_config_dirs(tmp_path, monkeypatch, capsys):
    from helpers import FIXTURES

    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "my-arch.json").write_text((FIXTURES / "model_configs" / f"{TINY}.json").read_text())
    weights = save_weights(make_tiny_model(), tmp_path / "base.safetensors")
    monkeypatch.setenv("RADAPTER_MODEL_CONFIG_DIRS", str(config_dir))

    code = main(
        [
            "export-onnx",
            "--arch",
            "my-arch",
            "--pretrained",
            str(weights),
            "--opset",
            "99",
            "--output-dir",
            str(tmp_path),
        ]
    )

    assert code == 2
    assert "opset 99 is newer" in capsys.readouterr().err
    assert "my-arch" in open_clip.list_models()
