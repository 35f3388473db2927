"""The embedded default backbone: a small stock open_clip `CLIP` pretrained on emoji renditions.

`register()` adds the architecture's JSON config to open_clip. After that, stock open_clip loads
the shipped weights, with no project code in the path:

    from training import embedded
    embedded.register()
    model = open_clip.create_model(embedded.ARCHITECTURE, pretrained=str(embedded.WEIGHTS_PATH))

MODEL_CARD.md beside this file gives the recipe, data, training time and measured results.
"""

from __future__ import annotations

from pathlib import Path

import open_clip

ARCHITECTURE = "radapter-emoji-vit"
CONFIG_PATH = Path(__file__).with_name(f"{ARCHITECTURE}.json")
WEIGHTS_PATH = Path(__file__).with_name(f"{ARCHITECTURE}.safetensors")


def register() -> str:
    """Register the embedded architecture's config with open_clip and return its name."""
    open_clip.add_model_config(CONFIG_PATH)
    return ARCHITECTURE
