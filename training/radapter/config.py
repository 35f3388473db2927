"""Configuration of R-Adapter insertion and training-time behaviour."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TOWERS = ("vision", "text")


@dataclass
class RAdapterConfig:
    """Placement, size and training behaviour of R-Adapters.

    Defaults follow the R-Adapter paper's ViT-B/16 ImageNet recipe (Kim et al., ECCV 2024).
    """

    towers: tuple[str, ...] = field(
        default=TOWERS, metadata={"help": "towers that receive adapters: 'vision', 'text' or both"}
    )
    vision_rank: int | None = field(
        default=None, metadata={"help": "rank of the vision adapters; None means full rank (width x width)"}
    )
    text_rank: int | None = field(
        default=None, metadata={"help": "rank of the text adapters; None means full rank (width x width)"}
    )
    drop_prob: float = field(
        default=0.2, metadata={"help": "per-sample probability of dropping the adapter branch in training"}
    )
    ema_momentum: float = field(
        default=0.999, metadata={"help": "momentum m of the exponential moving average of adapter weights"}
    )
    alpha: float = field(
        default=0.5, metadata={"help": "re-scaling factor applied to every adapter at evaluation and merge"}
    )
    init_scale: float = field(
        default=0.1, metadata={"help": "initial value of each adapter's learnable scale"}
    )

    def __post_init__(self) -> None:
        if isinstance(self.towers, str):
            raise ValueError(f"towers={self.towers!r} is invalid; pass a list such as ['vision', 'text'].")
        for name in ("drop_prob", "ema_momentum", "alpha", "init_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}={value!r} is invalid; it must be a number.")
        self.towers = tuple(self.towers)
        if not self.towers or any(tower not in TOWERS for tower in self.towers):
            raise ValueError(f"towers={self.towers!r} is invalid; choose 'vision', 'text' or both.")
        for name in ("vision_rank", "text_rank"):
            rank = getattr(self, name)
            if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
                raise ValueError(
                    f"{name}={rank!r} is invalid; use a positive integer, or None for full rank."
                )
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"drop_prob={self.drop_prob!r} is invalid; it must lie in [0, 1).")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum={self.ema_momentum!r} is invalid; it must lie in [0, 1).")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha!r} is invalid; it must lie in [0, 1].")

    def rank_for(self, tower: str) -> int | None:
        """Return the configured rank of `tower`'s adapters (None for full rank)."""
        return self.vision_rank if tower == "vision" else self.text_rank

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable copy of the configuration."""
        data = asdict(self)
        data["towers"] = list(self.towers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RAdapterConfig:
        """Build a configuration from `to_dict` output, rejecting unknown fields by name."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown R-Adapter config fields {unknown}; known fields are {sorted(known)}.")
        return cls(**data)
