"""The fine-tuning loop: AdamW, cosine warmup schedule, clipping, autocast, DDP, resume and logging."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.distributed as dist
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.losses import ClassificationLoss, info_nce_loss, mpm_nce_loss
from training.models import load_base_model, weights_sha256

from .checkpoint import checkpoint_file, gather_rng_states, load_checkpoint, save_checkpoint
from .config import TrainConfig, save_config
from .data import TrainData, build_train_data, epoch_batches, template_choices
from .methods import PreparedModel, prepare_model
from .outputs import write_outputs
from .runtime import command_line, git_commit, peak_memory_mb, reset_peak_memory, zero_shot_head
from .segmentation import segmentation_class_names, segmentation_loss

logger = logging.getLogger(__name__)


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1: NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Distributed(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Return the autocast dtype, or None for plain fp32."""
    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        return torch.bfloat16
    # auto: bf16 where the accelerator supports it; CPUs without bf16 units run it slower than fp32.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class BatchContext:
    """Per-run constants the loss of one batch needs."""

    config: TrainConfig
    data: TrainData
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype | None
    templates_per_sample: torch.Tensor | None = None
    step: int = 0


def batch_loss(
    forward: torch.nn.Module, batch: list, positions: list[int], context: BatchContext
) -> torch.Tensor:
    """Compute the training loss of one local batch."""
    config = context.config
    images = batch[0].to(context.device, non_blocking=True)
    autocast = torch.autocast(context.device.type, dtype=context.dtype) if context.dtype else nullcontext()

    if config.task == "segmentation":
        return segmentation_batch_loss(forward, images, batch[1].to(context.device), context, autocast)
    if config.task == "classification":
        labels = batch[1].to(context.device)
        if config.trains_head:
            with autocast:
                logits = forward(images)  # (B, C)
            return ClassificationLoss(config.label_smoothing)(logits.float(), labels)
        choices = context.templates_per_sample[positions].tolist()
        names = context.data.class_names
        texts = [
            context.data.templates[choice].format(names[label])
            for choice, label in zip(choices, labels.tolist(), strict=True)
        ]
    else:
        texts, labels = list(batch[1]), batch[2].to(context.device)

    tokens = context.tokenizer(texts).to(context.device)
    with autocast:
        image_features, text_features = forward(images, tokens)  # (B, D) each
    if config.loss == "info-nce":
        return info_nce_loss(image_features.float(), text_features.float(), 1.0 / config.temperature)
    return mpm_nce_loss(
        image_features.float(),
        text_features.float(),
        labels,
        temperature=config.temperature,
        margin=config.margin,
        label_smoothing=config.label_smoothing,
    )


def segmentation_batch_loss(
    forward: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, context: BatchContext, autocast
) -> torch.Tensor:
    """Score every pixel against all class prompts, one random template per class and step."""
    config = context.config
    names = segmentation_class_names(context.data.labels)
    # Seeded by the step alone, so every process picks the same prompts.
    choices = template_choices(len(names), len(context.data.templates), config.seed, context.step).tolist()
    prompts = [
        context.data.templates[choice].format(name) for choice, name in zip(choices, names, strict=True)
    ]
    tokens = context.tokenizer(prompts).to(context.device)
    with autocast:
        patches, texts = forward(images, tokens)  # (B, grid_h, grid_w, D), (K, D)
    return segmentation_loss(
        patches, texts, masks, config.loss, config.temperature, config.margin, config.label_smoothing
    )


@dataclass
class RunState:
    """Mutable training state: the model, its DDP wrapper, AdamW, the schedule and the step counter."""

    prepared: PreparedModel
    forward: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    # Timing is carried over checkpoints, so a resumed run reports the cost of the whole run.
    step_times: list[float] = field(default_factory=list)
    earlier_wall_s: float = 0.0
    started: float = 0.0  # time.perf_counter() when this invocation began


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one fine-tuning job end to end and return its training summary (rank 0 writes the outputs).

    A run folder that already contains `checkpoints/last.pt` is resumed from it. Under torchrun every
    process reads that file, so a multi-node job needs the run folder on a shared file system.
    """
    if config.output is None:
        raise ValueError("no run folder: pass --output DIR.")
    run_dir = Path(config.output)
    env = setup_distributed()
    seed_everything(config.seed)
    started = time.perf_counter()
    reset_peak_memory(env.device)

    model = load_base_model(config.arch, config.pretrained, device=env.device)
    base_sha256 = weights_sha256(model.state_dict())
    tokenizer = open_clip.get_tokenizer(config.arch)
    preprocess = PreprocessCfg(**model.visual.preprocess_cfg)
    # Random crops would misalign segmentation masks, so segmentation trains on the evaluation transform.
    data = build_train_data(config, image_transform_v2(preprocess, is_train=config.task != "segmentation"))
    head = None
    if config.trains_head:
        head = zero_shot_head(model, tokenizer, data.class_names, data.templates).to(env.device)
    prepared = prepare_model(model, config, head)

    state = build_state(config, prepared, env, len(data.dataset) // config.batch_size)
    state.started = started
    checkpoint_path = checkpoint_file(run_dir)
    if checkpoint_path.is_file():
        state.step, timing = load_checkpoint(
            checkpoint_path, prepared, state.optimizer, state.scheduler, config
        )
        state.step_times, state.earlier_wall_s = timing["step_times"], timing["wall_time_s"]
        logger.info("resumed %s at step %d", checkpoint_path, state.step)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.json")

    context = BatchContext(config, data, tokenizer, env.device, autocast_dtype(config, env.device))
    run_steps(state, context, env, checkpoint_path)

    summary = training_summary(config, prepared, state.step, state.step_times, elapsed(state), env)
    if env.is_main:
        write_outputs(run_dir, config, prepared, data, base_sha256, summary)
    if env.world_size > 1:
        dist.barrier()
    return summary


def build_state(
    config: TrainConfig, prepared: PreparedModel, env: Distributed, steps_per_epoch: int
) -> RunState:
    """Wrap the model for DDP when distributed, and create AdamW and the cosine schedule."""
    prepared.forward.train()
    forward = prepared.forward
    if env.world_size > 1:
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        forward = DistributedDataParallel(forward, device_ids=device_ids)

    total_steps = steps_per_epoch * config.epochs
    if config.warmup_steps >= total_steps and env.is_main:
        logger.warning(
            "warmup_steps=%d is not below the %d scheduled steps (%d per epoch), so the learning rate never "
            "reaches its peak; pass a smaller --warmup-steps or more --epochs",
            config.warmup_steps,
            total_steps,
            steps_per_epoch,
        )
    trainable = prepared.trainable_parameters().values()
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = cosine_with_warmup(optimizer, config.warmup_steps, total_steps)
    return RunState(prepared, forward, optimizer, scheduler)


def elapsed(state: RunState) -> float:
    """Return the run's wall time in seconds: earlier invocations plus this one so far."""
    return state.earlier_wall_s + time.perf_counter() - state.started


def run_steps(state: RunState, context: BatchContext, env: Distributed, checkpoint_path: Path) -> None:
    """Train from `state.step` to the last step, logging, checkpointing and recording step times."""
    config, data = context.config, context.data
    steps_per_epoch = len(data.dataset) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    last_step = min(total_steps, config.max_steps) if config.max_steps else total_steps
    log = MetricsLog(checkpoint_path.parent.parent, enabled=env.is_main)
    progress = tqdm(
        total=last_step, initial=state.step, desc=f"train {config.method}", disable=not env.is_main
    )
    step_times = state.step_times

    while state.step < last_step:
        epoch, offset = divmod(state.step, steps_per_epoch)
        if config.task == "classification":
            context.templates_per_sample = template_choices(
                len(data.dataset), len(data.templates), config.seed, epoch
            )
        data.dataset.epoch = epoch
        batches = epoch_batches(len(data.dataset), config, epoch, env.rank, env.world_size)[offset:]
        # A loader's own generator keeps its iterator from drawing on the global RNG, whose state
        # (Adapter Dropping) a resumed run must continue exactly.
        loader_generator = torch.Generator().manual_seed(config.seed + epoch)
        loader = DataLoader(
            data.dataset, batch_sampler=batches, num_workers=config.num_workers, generator=loader_generator
        )
        for positions, batch in zip(batches, loader, strict=True):
            tick = time.perf_counter()
            context.step = state.step
            row = train_step(state, batch, positions, context)
            step_times.append(time.perf_counter() - tick)
            row.update(epoch=epoch, step_time_s=step_times[-1])
            log.write(row, every=config.log_every, force=state.step == last_step)
            progress.update(1)
            progress.set_postfix(loss=f"{row['loss']:.4f}")

            if state.step % config.checkpoint_every == 0 or state.step == last_step:
                rng_per_rank = gather_rng_states()  # a collective: every process takes part
                if env.is_main:
                    save_checkpoint(
                        checkpoint_path,
                        state.prepared,
                        state.optimizer,
                        state.scheduler,
                        state.step,
                        config,
                        rng_per_rank,
                        {"step_times": step_times, "wall_time_s": elapsed(state)},
                    )
            if state.step == last_step:
                break
    progress.close()
    log.close()


def train_step(state: RunState, batch: list, positions: list[int], context: BatchContext) -> dict[str, Any]:
    """Run one optimizer step (loss, backward, clipping, AdamW, schedule, EMA); return its log row."""
    loss = batch_loss(state.forward, batch, positions, context)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainable = state.prepared.trainable_parameters().values()
    grad_norm = clip_gradients(trainable, context.config.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    if state.prepared.ema is not None:
        state.prepared.ema.update(state.prepared.model)
    state.step += 1
    return {
        "step": state.step,
        "loss": mean_over_processes(loss.detach()),
        "lr": state.scheduler.get_last_lr()[0],
        "grad_norm": grad_norm,
    }


def clip_gradients(parameters, max_norm: float | None) -> float:
    """Clip the global gradient norm when `max_norm` is set; return the norm before clipping."""
    parameters = [parameter for parameter in parameters if parameter.grad is not None]
    if max_norm is None:
        return float(
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters]))
        )
    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))


def mean_over_processes(value: torch.Tensor) -> float:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


def training_summary(
    config: TrainConfig,
    prepared: PreparedModel,
    step: int,
    step_times: list[float],
    wall_s: float,
    env: Distributed,
) -> dict[str, Any]:
    """Return what `adapter.json`, `summary.json` and the comparison's cost table report."""
    trainable = sum(parameter.numel() for parameter in prepared.trainable_parameters().values())
    total = sum(parameter.numel() for parameter in prepared.model.parameters())
    steady = step_times[1:] or step_times  # the first step pays for lazy initialisation
    return {
        "command": command_line(),
        "git_commit": git_commit(),
        "method": config.method,
        "task": config.task,
        "steps": step,
        "seed": config.seed,
        "world_size": env.world_size,
        "global_batch_size": config.batch_size,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "mean_step_time_s": sum(steady) / len(steady) if steady else None,
        "wall_time_s": wall_s,
        "peak_memory_mb": peak_memory_mb(env.device),
        "device": str(env.device),
    }


class MetricsLog:
    """Append training metrics as JSON lines to `metrics.jsonl`, and to TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, row: dict[str, Any], every: int, force: bool = False) -> None:
        if not self.enabled or (row["step"] % every and not force):
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
