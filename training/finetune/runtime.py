"""Run records shared by training and evaluation: peak memory, git commit, the command line."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

REPOSITORY = Path(__file__).resolve().parents[2]


def peak_memory_mb(device: torch.device) -> float:
    """Return the peak memory in MiB: CUDA allocations since the last reset, else the process's resident set.

    The resident-set peak covers the whole process lifetime, so on CPU it includes earlier runs of
    the same process, such as those `python -m training.compare` runs one after another.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def git_commit() -> str:
    """Return the checked-out commit, with `+dirty` when tracked files differ, or `unknown` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD"], cwd=REPOSITORY, capture_output=True
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def zero_shot_head(
    model: nn.Module, tokenizer, class_names: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """Return (C, D) unit class embeddings: the mean prompt embedding of each class, renormalised."""
    from training.evaluate import OnDevice  # evaluate imports this package, so import it late
    from training.zero_shot import build_classifier

    was_training = model.training
    model.eval()
    head = build_classifier(OnDevice(model), tokenizer, class_names, templates)
    model.train(was_training)
    return head
