"""Resumable training checkpoints: trainable weights, EMA, optimizer, scheduler, RNG states and step."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .config import TrainConfig
from .methods import PreparedModel

CHECKPOINT_NAME = "last.pt"

# Fields that may change between an interrupted run and its resumption without changing the result.
RESUMABLE_CHANGES = {"max_steps", "log_every", "checkpoint_every", "num_workers", "output"}


def checkpoint_file(run_dir: Path) -> Path:
    """Return the path of a run folder's resumable checkpoint."""
    return run_dir / "checkpoints" / CHECKPOINT_NAME


def rng_states() -> dict[str, Any]:
    """Return this process's RNG states (torch CPU, CUDA when present, Python)."""
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def gather_rng_states() -> list[dict[str, Any]]:
    """Return the RNG states of every process in rank order; call it on every process."""
    if not (dist.is_available() and dist.is_initialized()):
        return [rng_states()]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, rng_states())
    return states


def save_checkpoint(
    path: Path,
    prepared: PreparedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    config: TrainConfig,
    rng_per_rank: list[dict[str, Any]],
    timing: dict[str, Any],
) -> None:
    """Write the training state atomically, so an interruption never leaves a truncated checkpoint.

    `rng_per_rank` comes from `gather_rng_states`, so every process resumes its own random stream
    (Adapter Dropping masks differ per process). `timing` holds the step times and wall time so far.
    """
    state = {
        "step": step,
        "config": config.to_dict(),
        "trainable": {
            name: parameter.detach().cpu() for name, parameter in prepared.trainable_parameters().items()
        },
        "ema": prepared.ema.state_dict() if prepared.ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_per_rank,
        "timing": timing,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(
    path: Path,
    prepared: PreparedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
) -> tuple[int, dict[str, Any]]:
    """Restore the training state from `path` in place and return its step and the timing so far.

    Checkpoints written before timing was saved give no step times and a wall time of 0.
    """
    # weights_only=False: Python's random state is a tuple of ints that the safe loader rejects.
    # The caller passes only `checkpoints/last.pt` of the run folder, which this command writes.
    state = torch.load(path, map_location="cpu", weights_only=False)
    _check_same_run(state["config"], config, path)
    trainable = prepared.trainable_parameters()
    if set(state["trainable"]) != set(trainable):
        raise ValueError(
            f"checkpoint {path} contains other trainable parameters than this run; start in a new --output."
        )
    with torch.no_grad():
        for name, parameter in trainable.items():
            parameter.copy_(state["trainable"][name])
    if prepared.ema is not None:
        prepared.ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    distributed = dist.is_available() and dist.is_initialized()
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if len(state["rng"]) != world_size:
        raise ValueError(
            f"checkpoint {path} was written by {len(state['rng'])} processes, not {world_size}; "
            "resume it with as many processes, or start a new --output."
        )
    restore_rng_states(state["rng"][rank])
    timing = state.get("timing") or {"step_times": [], "wall_time_s": 0.0}
    return int(state["step"]), timing


def changed_settings(saved: dict[str, Any], config: TrainConfig, ignore: set[str]) -> list[str]:
    """Return `key: old -> new` for each setting of `config` that differs from the `saved` dict."""
    current = config.to_dict()
    changed = sorted(key for key in current if key not in ignore and saved.get(key) != current[key])
    return [f"{key}: {saved.get(key)!r} -> {current[key]!r}" for key in changed]


def _check_same_run(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    changed = changed_settings(saved, config, RESUMABLE_CHANGES)
    if changed:
        raise ValueError(
            f"cannot resume from {path}: the settings changed ({', '.join(changed[:5])}). "
            "Restore them, or pass a new --output to start a fresh run."
        )
