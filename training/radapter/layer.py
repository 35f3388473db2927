"""The R-Adapter module that occupies open_clip's `ls_1` / `ls_2` slot of a residual block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RAdapter(nn.Module):
    """Linear adapter `A(z) = z + s * drop(F z)` applied before the residual add of a sub-layer.

    `F` is a full `width x width` matrix (zero-initialised) or a low-rank product `up @ down` with
    `down` Xavier-initialised and `up` zero-initialised, so a fresh adapter is an exact identity.
    In training the branch `F z` is dropped per sample with probability `drop_prob` (Adapter Dropping)
    and kept samples are rescaled by `1 / (1 - drop_prob)`. In evaluation nothing is dropped and the
    branch is multiplied by `alpha` (re-scaling), which equals WiSE-FT interpolation in weight space.

    The module it replaces (an `nn.Identity`, or a `LayerScale` when the model uses layer scale) is
    kept as `base_layer` and applied after the adapter. The adapter then acts directly on the output
    of `attn.out_proj` / `mlp.c_proj`, so the merge `W <- (I + alpha s F) W` is exact.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        width: int,
        rank: int | None = None,
        drop_prob: float = 0.2,
        init_scale: float = 0.1,
        batch_dim: int = 0,
    ) -> None:
        super().__init__()
        if rank is not None and not 1 <= rank <= width:
            raise ValueError(
                f"rank={rank} is invalid for width {width}; use 1..{width}, or None for full rank."
            )
        self.base_layer = base_layer
        self.width = width
        self.rank = rank
        self.drop_prob = drop_prob
        self.batch_dim = batch_dim
        self.alpha = 1.0
        if rank is None:
            self.weight = nn.Parameter(torch.zeros(width, width))
        else:
            self.down = nn.Parameter(torch.empty(rank, width))
            self.up = nn.Parameter(torch.zeros(width, rank))
            nn.init.xavier_uniform_(self.down)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    @property
    def is_low_rank(self) -> bool:
        return self.rank is not None

    def delta_weight(self) -> torch.Tensor:
        """Return `F` as a dense `(width, width)` matrix."""
        if self.is_low_rank:
            return self.up @ self.down
        return self.weight

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_low_rank:
            hidden = F.linear(x, self.down.to(x.dtype))  # (..., rank)
            return F.linear(hidden, self.up.to(x.dtype))  # (..., width)
        return F.linear(x, self.weight.to(x.dtype))

    def _drop_mask(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.ndim
        shape[self.batch_dim] = x.shape[self.batch_dim]
        keep = torch.rand(shape, device=x.device) >= self.drop_prob
        return keep.to(x.dtype) / (1.0 - self.drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self._branch(x)

        if self.training and self.drop_prob > 0:
            branch = branch * self._drop_mask(x)
            scale = self.scale
        elif self.training:
            scale = self.scale
        else:
            scale = self.alpha * self.scale

        x = x + scale.to(x.dtype) * branch
        return self.base_layer(x)

    def extra_repr(self) -> str:
        rank = "full" if self.rank is None else self.rank
        return f"width={self.width}, rank={rank}, drop_prob={self.drop_prob}, alpha={self.alpha}"
