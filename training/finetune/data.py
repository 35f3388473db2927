"""Training data: manifests to data sets, few-shot subsets, and a resumable per-epoch batch order."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset, DistributedSampler, Subset

from training.data.datasets import (
    PROMPT_TEMPLATES,
    ClassificationDataset,
    RetrievalDataset,
    SegmentationDataset,
    class_display_name,
    load_classes,
)

from .config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainData:
    """A training set and what the text side of classification needs: class names and templates."""

    dataset: Dataset
    labels: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return [class_display_name(label) for label in self.labels]


def build_train_data(config: TrainConfig, transform: Callable) -> TrainData:
    """Load the training manifest of `config.task`, then apply `--shots` and `--limit`."""
    manifest = config.resolved_train_manifest()
    if config.task == "classification":
        classes_path = Path(config.data) / "classes.json" if config.data else None
        classes = load_classes(classes_path) if classes_path is not None and classes_path.is_file() else None
        dataset = ClassificationDataset(manifest, transform, classes=classes)
        data = TrainData(dataset, list(dataset.classes), list(PROMPT_TEMPLATES))
        indices = list(range(len(dataset)))
        if config.shots is not None:
            indices = few_shot_indices(
                [record.label for record in dataset.records], config.shots, config.seed
            )
    elif config.task == "segmentation":
        if config.data is None or not (Path(config.data) / "classes.json").is_file():
            raise ValueError(
                "segmentation needs the class list of its masks: pass --data DIR containing classes.json."
            )
        dataset = SegmentationDataset(manifest, transform, load_classes(Path(config.data) / "classes.json"))
        data = TrainData(dataset, list(dataset.classes), list(PROMPT_TEMPLATES))
        indices = list(range(len(dataset)))
    else:
        dataset = RetrievalDataset(manifest, transform)
        data = TrainData(dataset)
        indices = list(range(len(dataset)))
    if config.limit is not None:
        indices = indices[: config.limit]
    if len(indices) < len(dataset):
        data.dataset = Subset(dataset, indices)
    data.dataset = SeededSamples(data.dataset, config.seed)
    if len(data.dataset) < config.batch_size:
        raise ValueError(
            f"batch_size={config.batch_size} exceeds the {len(data.dataset)} training samples of {manifest}; "
            f"pass --batch-size {len(data.dataset)} or less."
        )
    return data


class SeededSamples(Dataset):
    """Load sample i of `epoch` under an RNG seeded from (seed, epoch, i), then restore the RNG.

    Random augmentation then depends on the sample alone, not on the process or worker that loads
    it. So N processes get the same crops as one, and a resumed run gets those of an uninterrupted run.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
        python_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            random.seed(sample_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(python_state)


def few_shot_indices(labels: Sequence[str | None], shots: int, seed: int) -> list[int]:
    """Return K = `shots` indices per class, drawn without replacement with `seed`, in class order."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[str(label)].append(index)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    short = []
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        chosen.extend(sorted(members[position] for position in order[:shots]))
        if len(members) < shots:
            short.append(f"{label} ({len(members)})")
    if short:
        logger.warning(
            "%d classes have fewer than %d images and use all they have: %s",
            len(short),
            shots,
            ", ".join(short[:5]),
        )
    return chosen


def epoch_batches(
    num_samples: int, config: TrainConfig, epoch: int, rank: int, world_size: int
) -> list[list[int]]:
    """Return this process's batches of sample positions for one epoch; the last partial batch is dropped.

    Every process draws the same permutation (DistributedSampler seeded with `seed`, set to `epoch`)
    and takes every `world_size`-th position. Batch b of all processes together is then exactly
    batch b of a single process with the same global batch size.
    """
    if config.batch_size % world_size:
        raise ValueError(
            f"batch_size={config.batch_size} does not split evenly over {world_size} processes; "
            f"pass a multiple of {world_size}."
        )
    local_batch = config.batch_size // world_size
    sampler = DistributedSampler(
        range(num_samples), num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    positions = list(sampler)
    num_batches = num_samples // config.batch_size
    return [positions[index * local_batch : (index + 1) * local_batch] for index in range(num_batches)]


def template_choices(num_samples: int, num_templates: int, seed: int, epoch: int) -> torch.Tensor:
    """Return one random template index per training sample for `epoch`, equal on every process."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randint(num_templates, (num_samples,), generator=generator)
