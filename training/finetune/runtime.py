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


PROC_SELF = Path("/proc/self")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for `peak_memory_mb`: the CUDA allocator's, or on Linux the resident set's.

    Writing 5 to /proc/self/clear_refs resets the kernel's resident-set high-water mark (VmHWM), so a
    process that runs several jobs in turn, as `python -m training.compare` does, measures each alone.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        (PROC_SELF / "clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not permitted: the peak then covers the whole process


def peak_memory_mb(device: torch.device) -> float:
    """Return the peak memory in MiB since `reset_peak_memory`: CUDA allocations, else the resident set.

    Where the resident-set high-water mark cannot be read or reset, the peak covers the process's life.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = (PROC_SELF / "status").read_text()
    except OSError:
        status = ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # the value is in kB
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
