"""Run records: the peak memory of one run in a process that runs several."""

from __future__ import annotations

import sys

import pytest
import torch

from training.finetune.runtime import peak_memory_mb, reset_peak_memory

CPU = torch.device("cpu")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resident-set peak resets on Linux only")
def test_reset_peak_memory_forgets_old_peak():
    block = torch.ones(64 * 2**20)  # 256 MiB, freed before the reset
    block.add_(1)
    before = peak_memory_mb(CPU)
    del block

    reset_peak_memory(CPU)

    assert peak_memory_mb(CPU) < before - 128
