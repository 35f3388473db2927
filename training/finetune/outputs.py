"""Run outputs: the adapter directory, the merged open_clip checkpoint, the class head and the summary.

A run folder holds:

- `merged.safetensors`: plain open_clip weights that `open_clip.create_model(arch, pretrained=PATH)`
  loads with strict keys (every method; R-Adapter folded in at `alpha` with the EMA weights).
- `adapter/`: `adapter.safetensors` and `adapter.json` (R-Adapter only, EMA weights).
- `head.safetensors`: the trained class head (full-ft and linear-probe classification).
- `summary.json`, `config.json`, `metrics.jsonl` and `checkpoints/last.pt`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from training.data.files import atomic_write_text
from training.radapter import AdapterMetadata, adapter_state_dict, merged_state_dict, save_adapter

from .config import TrainConfig
from .data import TrainData
from .methods import PreparedModel, merged_lora_state_dict, radapter_config

MERGED_NAME = "merged.safetensors"
HEAD_NAME = "head.safetensors"
ADAPTER_DIR = "adapter"
SUMMARY_NAME = "summary.json"


def write_outputs(
    run_dir: Path,
    config: TrainConfig,
    prepared: PreparedModel,
    data: TrainData,
    base_sha256: str,
    summary: dict[str, Any],
) -> None:
    """Write the adapter, the merged checkpoint, the head and the summary of a finished run."""
    if config.method == "r-adapter":
        with prepared.ema.swapped_in(prepared.model):
            tensors = adapter_state_dict(prepared.model)
            merged = merged_state_dict(prepared.model, config.alpha)
        metadata = AdapterMetadata(
            base_architecture=config.arch,
            base_weights_sha256=base_sha256,
            config=radapter_config(config),
            task=config.task,
            labels=data.labels,
            templates=data.templates,
            training=summary,
        )
        save_adapter(run_dir / ADAPTER_DIR, tensors, metadata)
    elif config.method == "lora":
        merged = merged_lora_state_dict(prepared.model)
    else:
        merged = prepared.model.state_dict()
    save_file(
        {name: tensor.detach().cpu().contiguous() for name, tensor in merged.items()},
        str(run_dir / MERGED_NAME),
        metadata={"architecture": config.arch, "method": config.method},
    )
    if prepared.uses_head:
        head = prepared.forward.head.detach().cpu().contiguous()
        save_file({"head": head}, str(run_dir / HEAD_NAME), metadata={"labels": json.dumps(data.labels)})
    record = {
        **summary,
        "labels": data.labels,
        "templates": data.templates,
        "base_weights_sha256": base_sha256,
    }
    # The summary marks the run as finished, so it must never exist half-written.
    atomic_write_text(run_dir / SUMMARY_NAME, json.dumps(record, indent=2, sort_keys=True) + "\n")


def load_head(run_dir: Path) -> tuple[torch.Tensor, list[str]]:
    """Read a run's class head and its label order."""
    from safetensors import safe_open

    path = run_dir / HEAD_NAME
    with safe_open(str(path), framework="pt") as handle:
        labels = json.loads(handle.metadata()["labels"])
        return handle.get_tensor("head"), labels
