"""`radapter train`: fine-tune an open_clip model with R-Adapter, full fine-tuning, LoRA or a linear probe.

Settings come from a TOML recipe in training/recipes (the task's by default), and every flag
overrides one recipe field. Run it under `torchrun --nproc-per-node N` for data-parallel training.
"""

from __future__ import annotations

import argparse
import json
import os

from .finetune import config_from_args, train
from .finetune.config import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    summary = train(config)
    if os.environ.get("RANK", "0") == "0":  # torchrun starts one copy per process; report once
        print(json.dumps(summary, indent=2, sort_keys=True))
    return 0
