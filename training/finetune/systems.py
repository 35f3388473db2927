"""Evaluable systems: a trained run (or the zero-shot base) rebuilt as a model at any alpha.

- R-Adapter: the base model with the run's EMA adapters; alpha is the re-scaling factor.
- full-ft: WiSE-FT, `(1 - alpha) * zero-shot + alpha * fine-tuned` for every weight and for the head.
- linear-probe and LoRA: the trained model; alpha does not apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from safetensors.torch import load_file
from torch import nn

from training.data.datasets import PROMPT_TEMPLATES, class_display_name
from training.models import load_base_model, weights_sha256
from training.radapter import (
    check_base_matches,
    inject_adapters,
    load_adapter,
    load_adapter_state_dict,
    set_alpha,
)

from .config import TrainConfig, read_config
from .outputs import ADAPTER_DIR, HEAD_NAME, MERGED_NAME, SUMMARY_NAME, load_head
from .runtime import zero_shot_head


@dataclass
class SweepSystem:
    """One model to evaluate, possibly as a family indexed by alpha in [0, 1]."""

    name: str
    model: nn.Module
    tokenizer: Any
    transform: Any
    config: TrainConfig | None = None
    run_dir: Path | None = None
    labels: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=lambda: list(PROMPT_TEMPLATES))
    default_alpha: float | None = None
    head: torch.Tensor | None = None
    # WiSE-FT only: the zero-shot endpoints of the interpolation.
    base_state: dict[str, torch.Tensor] | None = None
    tuned_state: dict[str, torch.Tensor] | None = None
    base_head: torch.Tensor | None = None

    @property
    def sweepable(self) -> bool:
        return self.config is not None and self.config.method in ("r-adapter", "full-ft")

    def at_alpha(self, alpha: float | None) -> tuple[nn.Module, torch.Tensor | None]:
        """Return the model and class head (None: build one from the text tower) at `alpha`."""
        method = self.config.method if self.config is not None else "zero-shot"
        if alpha is None or method not in ("r-adapter", "full-ft"):
            return self.model, self.head
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha!r} is invalid; it must lie in [0, 1].")
        if method == "r-adapter":
            set_alpha(self.model, alpha)
            return self.model, None
        interpolated = {
            key: torch.lerp(self.base_state[key].float(), self.tuned_state[key].float(), alpha).to(
                self.base_state[key].dtype
            )
            for key in self.base_state
        }
        self.model.load_state_dict(interpolated, strict=True)
        head = None if self.head is None else torch.lerp(self.base_head, self.head, alpha)
        return self.model, head


def validation_transform(model: nn.Module):
    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)


def load_base_for(config: TrainConfig, device: torch.device) -> nn.Module:
    """Load a run's base model; a random-init base is recreated from the run's seed, as training did."""
    if config.pretrained is None:
        torch.manual_seed(config.seed)
    return load_base_model(config.arch, config.pretrained, device=device)


def load_zero_shot_system(
    arch: str | None, pretrained: str | None, runs: list[SweepSystem], device: torch.device
) -> SweepSystem:
    """Build the zero-shot system from --arch/--pretrained, else from the first run's base model."""
    if arch is None and runs:
        config = runs[0].config
        model = load_base_for(config, device)
        return SweepSystem(
            "zero-shot",
            model,
            open_clip.get_tokenizer(config.arch),
            validation_transform(model),
            labels=runs[0].labels,
        )
    if arch is None:
        raise ValueError("--zero-shot needs --arch (and --pretrained) when no --run is given.")
    model = load_base_model(arch, pretrained, device=device)
    return SweepSystem("zero-shot", model, open_clip.get_tokenizer(arch), validation_transform(model))


def load_run_system(run_dir: Path, device: torch.device | str = "cpu") -> SweepSystem:
    """Rebuild the model a `radapter train` run produced, checking it against the run's base weights."""
    config = read_config(run_dir / "config.json")
    summary_path = run_dir / SUMMARY_NAME
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} not found; the run in {run_dir} has not finished training.")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))

    base = load_base_for(config, torch.device(device))
    base_sha256 = weights_sha256(base.state_dict())
    if base_sha256 != summary["base_weights_sha256"]:
        raise ValueError(
            f"the base weights of {run_dir} changed: training saw sha256 {summary['base_weights_sha256']}, "
            f"{config.pretrained or 'random init'} now has {base_sha256}; restore the original weights file."
        )
    system = SweepSystem(
        run_dir.name,
        base,
        open_clip.get_tokenizer(config.arch),
        validation_transform(base),
        config=config,
        run_dir=run_dir,
        labels=summary["labels"],
        templates=summary["templates"] or list(PROMPT_TEMPLATES),
    )

    if config.method == "r-adapter":
        _attach_adapter(system, run_dir / ADAPTER_DIR, base_sha256)
    else:
        _attach_tuned_weights(system, run_dir)
    return system


def _attach_tuned_weights(system: SweepSystem, run_dir: Path) -> None:
    """Load `merged.safetensors` and the head; for full-ft keep the zero-shot endpoints for WiSE-FT."""
    tuned_state = load_file(str(run_dir / MERGED_NAME))
    if (run_dir / HEAD_NAME).is_file():
        system.head, head_labels = load_head(run_dir)
        if head_labels != system.labels:
            raise ValueError(
                f"{run_dir / HEAD_NAME} labels differ from {run_dir / SUMMARY_NAME}; "
                "the run folder is inconsistent, so retrain it."
            )

    if system.config.method == "full-ft":
        # The model still contains the zero-shot weights here.
        system.default_alpha = 1.0
        system.base_state = {
            key: tensor.detach().cpu().clone() for key, tensor in system.model.state_dict().items()
        }
        system.tuned_state = tuned_state
        if system.head is not None:
            names = [class_display_name(label) for label in system.labels]
            system.base_head = zero_shot_head(system.model, system.tokenizer, names, system.templates)
    system.model.load_state_dict(tuned_state, strict=True)


def _attach_adapter(system: SweepSystem, adapter_dir: Path, base_sha256: str) -> None:
    tensors, metadata = load_adapter(adapter_dir)
    check_base_matches(metadata, system.config.arch, base_sha256)
    inject_adapters(system.model, metadata.config)
    load_adapter_state_dict(system.model, tensors)
    system.model.eval()
    system.default_alpha = metadata.config.alpha
