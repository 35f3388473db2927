"""Exponential moving average of adapter weights (R-Adapter's weight-space self-ensemble)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .model import adapter_parameter_names


class AdapterEMA:
    """Track `ema <- m * ema + (1 - m) * theta` for every adapter parameter.

    Call `update` after every optimizer step, starting from the first. Evaluation and merging use the
    averaged weights through `swapped_in`, which restores the live weights afterwards.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.999) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r} is invalid; it must lie in [0, 1).")
        self.momentum = momentum
        self.names = adapter_parameter_names(model)
        if not self.names:
            raise ValueError("the model has no R-Adapters to average; call inject_adapters first.")
        parameters = dict(model.named_parameters())
        self.shadow = {name: parameters[name].detach().clone().float() for name in self.names}
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current adapter weights."""
        parameters = dict(model.named_parameters())
        for name in self.names:
            self.shadow[name].lerp_(parameters[name].detach().float(), 1.0 - self.momentum)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's adapter weights with the averaged ones."""
        parameters = dict(model.named_parameters())
        for name in self.names:
            parameters[name].copy_(self.shadow[name])

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run a block with the averaged weights in the model, then restore the live weights."""
        parameters = dict(model.named_parameters())
        live = {name: parameters[name].detach().clone() for name in self.names}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name in self.names:
                    parameters[name].copy_(live[name])

    def state_dict(self) -> dict[str, object]:
        return {"momentum": self.momentum, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        shadow = state["shadow"]
        if set(shadow) != set(self.names):
            raise ValueError(
                "EMA state does not match the model's adapters; was it saved for another config?"
            )
        self.momentum = float(state["momentum"])
        self.num_updates = int(state["num_updates"])
        self.shadow = {name: tensor.clone().float() for name, tensor in shadow.items()}
