"""The shipped backbone loads through stock open_clip and embeds images and text sensibly."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from training import embedded

# The model card promises a file of at most 25 MB (decimal megabytes).
MAX_WEIGHTS_BYTES = 25_000_000


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    embedded.register()
    # open_clip 3.3 loads a local weights file with load_state_dict(strict=True), so a missing or
    # extra key fails here.
    return open_clip.create_model(embedded.ARCHITECTURE, pretrained=str(embedded.WEIGHTS_PATH)).eval()


def test_embedded_files_present() -> None:
    assert embedded.CONFIG_PATH.is_file()
    assert embedded.WEIGHTS_PATH.is_file()
    assert embedded.WEIGHTS_PATH.with_name("MODEL_CARD.md").is_file()
    size = embedded.WEIGHTS_PATH.stat().st_size
    assert size <= MAX_WEIGHTS_BYTES, f"{embedded.WEIGHTS_PATH.name} is {size} bytes"


def test_embedded_config_registered() -> None:
    assert embedded.register() == embedded.ARCHITECTURE
    assert embedded.ARCHITECTURE in open_clip.list_models()
    config = json.loads(embedded.CONFIG_PATH.read_text(encoding="utf-8"))
    assert config["text_cfg"]["vocab_size"] == 49408, "the standard BPE vocabulary must be kept"


def test_embedded_loads_exact_fp16_values(model: torch.nn.Module) -> None:
    stored = load_file(str(embedded.WEIGHTS_PATH))
    loaded = model.state_dict()
    assert set(stored) == set(loaded)
    for name, tensor in stored.items():
        assert loaded[name].dtype == torch.float32, name
        # Every float16 value is exactly representable in float32, so loading changes no value.
        torch.testing.assert_close(loaded[name], tensor.float(), rtol=0, atol=0, msg=name)


def test_embedded_embeddings_finite_and_normalised(model: torch.nn.Module) -> None:
    tokenizer = open_clip.get_tokenizer(embedded.ARCHITECTURE)
    size = model.visual.image_size[0]
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image_features = model.encode_image(images, normalize=True)
        text_features = model.encode_text(
            tokenizer(["an emoji of a fox.", "a red apple", ""]), normalize=True
        )
    assert image_features.shape == (3, 384)
    assert text_features.shape == (3, 384)
    assert torch.isfinite(image_features).all()
    assert torch.isfinite(text_features).all()
    torch.testing.assert_close(image_features.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(text_features.norm(dim=1), torch.ones(3))


def test_embedded_logit_scale_trained(model: torch.nn.Module) -> None:
    # CLIP initialises logit_scale at log(1 / 0.07) = 2.659; a trained backbone has moved away from it.
    scale = float(model.logit_scale.detach())
    assert 0.0 < scale <= 4.6052
    assert abs(scale - 2.6593) > 0.05
