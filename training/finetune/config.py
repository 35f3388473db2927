"""Typed fine-tuning configuration: dataclass defaults, then a TOML recipe, then command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
TASKS = ("classification", "retrieval", "segmentation")
METHODS = ("r-adapter", "full-ft", "lora", "linear-probe")
LOSSES = ("mpm-nce", "info-nce", "cross-entropy")
PRECISIONS = ("auto", "bf16", "fp32")

# Re-scaling factor at evaluation and merge, per task (R-Adapter, Kim et al., ECCV 2024).
DEFAULT_ALPHA = {"classification": 0.5, "retrieval": 0.8, "segmentation": 0.4}
# Label smoothing of MPM-NCE: retrieval uses none because captions are not class prototypes.
DEFAULT_LABEL_SMOOTHING = {"classification": 0.02, "retrieval": 0.0, "segmentation": 0.02}
# Default training split per task, as `radapter data build` names its manifests.
DEFAULT_TRAIN_SPLIT = {
    "classification": "id-train",
    "retrieval": "retrieval-train",
    "segmentation": "segmentation-train",
}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Everything one fine-tuning run depends on. Every field is also a `radapter train` flag."""

    # What to train.
    task: str = field(default="classification", metadata=_help("classification, retrieval or segmentation"))
    method: str = field(default="r-adapter", metadata=_help("r-adapter, full-ft, lora or linear-probe"))
    arch: str = field(default="ViT-B-16", metadata=_help("open_clip architecture name"))
    pretrained: str | None = field(
        default=None,
        metadata=_help("base weights: an open_clip pretrained tag or a local file; unset means random init"),
    )
    data: str | None = field(
        default=None, metadata=_help("benchmark folder with classes.json and the manifests")
    )
    train_manifest: str | None = field(
        default=None, metadata=_help("training manifest; default DATA/id-train.jsonl or the task's split")
    )
    output: str | None = field(default=None, metadata=_help("run folder for checkpoints, logs and outputs"))

    # Optimisation (AdamW, cosine schedule with linear warmup).
    epochs: int = field(default=10, metadata=_help("passes over the training set"))
    max_steps: int | None = field(
        default=None,
        metadata=_help("stop after this many optimizer steps; the schedule still spans all epochs"),
    )
    batch_size: int = field(default=512, metadata=_help("global batch size, split evenly over processes"))
    lr: float = field(default=5e-4, metadata=_help("peak AdamW learning rate"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW decoupled weight decay"))
    warmup_steps: int = field(
        default=500, metadata=_help("optimizer steps of linear warmup before the cosine decay")
    )
    grad_clip: float | None = field(
        default=1.0, metadata=_help("max global gradient L2 norm; none disables clipping")
    )
    precision: str = field(default="auto", metadata=_help("auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32"))
    seed: int = field(default=0, metadata=_help("seed of weights, data order, templates and dropping"))
    num_workers: int = field(default=0, metadata=_help("data loader worker processes per training process"))
    limit: int | None = field(
        default=None, metadata=_help("use only the first N training samples (quick checks)")
    )
    shots: int | None = field(
        default=None, metadata=_help("few-shot: K training images per class, chosen with the seed")
    )

    # R-Adapter.
    drop_prob: float = field(default=0.2, metadata=_help("Adapter Dropping probability p per sample"))
    ema_momentum: float = field(
        default=0.999, metadata=_help("EMA momentum m of adapter weights; 0 disables EMA")
    )
    alpha: float | None = field(
        default=None, metadata=_help("re-scaling factor at evaluation and merge; default 0.5/0.8/0.4 by task")
    )
    vision_rank: int | None = field(default=None, metadata=_help("vision adapter rank; none = full rank"))
    text_rank: int | None = field(default=None, metadata=_help("text adapter rank; none = full rank"))
    few_shot_rank: int = field(
        default=4, metadata=_help("adapter rank of both towers when --shots is set and no rank is given")
    )

    # Loss.
    loss: str | None = field(
        default=None,
        metadata=_help(
            "mpm-nce, info-nce or cross-entropy; default cross-entropy for head methods, else mpm-nce"
        ),
    )
    margin: float = field(default=0.05, metadata=_help("MPM-NCE additive cosine margin delta on negatives"))
    label_smoothing: float | None = field(
        default=None, metadata=_help("target mass eps on negatives; default 0.02 classification, 0 retrieval")
    )
    temperature: float = field(
        default=0.01, metadata=_help("fixed softmax temperature tau of contrastive losses")
    )

    # LoRA baseline.
    lora_rank: int = field(default=8, metadata=_help("LoRA rank r on attention and MLP projections"))
    lora_alpha: float = field(
        default=16.0, metadata=_help("LoRA scaling numerator: the update is (alpha / r) B A")
    )

    # Bookkeeping.
    log_every: int = field(default=10, metadata=_help("optimizer steps between metrics log rows"))
    checkpoint_every: int = field(
        default=500, metadata=_help("optimizer steps between resumable checkpoints")
    )

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        _check_choice("method", self.method, METHODS)
        _check_choice("precision", self.precision, PRECISIONS)
        if self.alpha is None:
            self.alpha = DEFAULT_ALPHA[self.task]
        if self.label_smoothing is None:
            self.label_smoothing = DEFAULT_LABEL_SMOOTHING[self.task]
        if self.loss is None:
            head_method = self.method in ("full-ft", "linear-probe") and self.task == "classification"
            self.loss = "cross-entropy" if head_method else "mpm-nce"
        _check_choice("loss", self.loss, LOSSES)
        if (
            self.shots is not None
            and self.method == "r-adapter"
            and self.vision_rank is None
            and self.text_rank is None
        ):
            # Few-shot runs default to low-rank adapters, as in R-Adapter's 16-shot experiments.
            self.vision_rank = self.text_rank = self.few_shot_rank
        self._check_ranges()
        self._check_combinations()

    def _check_ranges(self) -> None:
        positive = ["epochs", "batch_size", "log_every", "checkpoint_every", "lora_rank", "few_shot_rank"]
        positive += [
            name
            for name in ("max_steps", "limit", "shots", "vision_rank", "text_rank")
            if getattr(self, name) is not None
        ]
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; use a positive integer.")
        for name in ("warmup_steps", "num_workers", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} is invalid; use a non-negative integer.")
        _check_range("lr", self.lr, 0.0, None, low_open=True)
        _check_range("weight_decay", self.weight_decay, 0.0, None)
        if self.grad_clip is not None:
            _check_range("grad_clip", self.grad_clip, 0.0, None, low_open=True)
        _check_range("drop_prob", self.drop_prob, 0.0, 1.0, high_open=True)
        _check_range("ema_momentum", self.ema_momentum, 0.0, 1.0, high_open=True)
        _check_range("alpha", self.alpha, 0.0, 1.0)
        _check_range("margin", self.margin, 0.0, 1.0)
        _check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _check_range("temperature", self.temperature, 0.0, None, low_open=True)
        _check_range("lora_alpha", self.lora_alpha, 0.0, None, low_open=True)

    @property
    def trains_head(self) -> bool:
        """Whether the run trains a class head on image embeddings (cross-entropy classification)."""
        return self.task == "classification" and self.loss == "cross-entropy"

    def _check_combinations(self) -> None:
        if self.method == "linear-probe" and self.task != "classification":
            raise ValueError(
                "method='linear-probe' trains a class head; "
                f"it needs task='classification', not {self.task!r}."
            )
        if self.trains_head and self.method in ("r-adapter", "lora"):
            raise ValueError(
                f"loss='cross-entropy' for classification trains a class head; method {self.method!r} "
                "trains with mpm-nce or info-nce."
            )
        if self.loss != "cross-entropy" and self.method == "linear-probe":
            raise ValueError(f"method='linear-probe' trains with loss='cross-entropy', not {self.loss!r}.")
        if self.loss == "cross-entropy" and self.task == "retrieval":
            raise ValueError(
                "loss='cross-entropy' is for classification and segmentation; "
                "retrieval trains with mpm-nce or info-nce."
            )
        if self.loss == "info-nce" and self.task == "segmentation":
            raise ValueError(
                "loss='info-nce' pairs images with captions; "
                "segmentation trains with mpm-nce or cross-entropy."
            )
        if self.shots is not None and self.task != "classification":
            raise ValueError(f"shots={self.shots} samples images per class; it needs task='classification'.")

    def resolved_train_manifest(self) -> Path:
        """Return the training manifest: `train_manifest`, else the task's split inside `data`."""
        if self.train_manifest is not None:
            return Path(self.train_manifest)
        if self.data is None:
            raise ValueError(
                "no training data: pass --data DIR (a `radapter data build` output) or --train-manifest FILE."
            )
        return Path(self.data) / f"{DEFAULT_TRAIN_SPLIT[self.task]}.jsonl"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build a config from a mapping, rejecting unknown keys by name."""
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in {source}; known keys are {sorted(known)}.")
        for key, value in data.items():
            _check_type(key, value, _field_types()[key], source)
        return cls(**data)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is invalid; choose one of {', '.join(choices)}.")


def _check_range(
    name: str, value: float, low: float, high: float | None, low_open: bool = False, high_open: bool = False
) -> None:
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or too_low or too_high:
        left = "(" if low_open else "["
        if high is None:
            right = "inf)"
        else:
            right = f"{high})" if high_open else f"{high}]"
        raise ValueError(f"{name}={value!r} is invalid; it must lie in {left}{low}, {right}.")


def _field_types() -> dict[str, tuple[type, ...]]:
    """Map each field to the Python types it accepts (None included for optional fields)."""
    hints = typing.get_type_hints(TrainConfig)
    types_by_field = {}
    for name, hint in hints.items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        accepted = tuple(type(None) if arg is type(None) else arg for arg in args)
        types_by_field[name] = accepted
    return types_by_field


def _check_type(key: str, value: object, accepted: tuple[type, ...], source: str) -> None:
    if float in accepted and isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, bool) or not isinstance(value, accepted):
        names = " or ".join("none" if kind is type(None) else kind.__name__ for kind in accepted)
        raise ValueError(f"{key}={value!r} in {source} has type {type(value).__name__}; expected {names}.")


def resolve_recipe(recipe: str) -> Path:
    """Return the recipe file for a name in training/recipes (without `.toml`) or a path."""
    path = Path(recipe)
    if path.suffix == ".toml":
        if not path.is_file():
            raise FileNotFoundError(
                f"recipe {recipe!r} not found; pass an existing .toml file or a built-in name."
            )
        return path
    builtin = RECIPES_DIR / f"{recipe}.toml"
    if not builtin.is_file():
        names = sorted(item.stem for item in RECIPES_DIR.glob("*.toml"))
        raise ValueError(f"unknown recipe {recipe!r}; built-in recipes are {names}, or pass a .toml path.")
    return builtin


def load_recipe(recipe: str) -> dict[str, Any]:
    """Read a recipe: a flat TOML table of TrainConfig fields; the string "none" stands for None."""
    path = resolve_recipe(recipe)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"recipe {path} is not valid TOML: {error}") from error
    return {key: None if value == "none" else value for key, value in data.items()}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--recipe` and one flag per TrainConfig field; a flag left out keeps the recipe's value."""
    parser.add_argument(
        "--recipe", help="built-in recipe name in training/recipes (default: the task's) or a .toml path"
    )
    for item, accepted in zip(dataclasses.fields(TrainConfig), _field_types().values(), strict=True):
        flag = "--" + item.name.replace("_", "-")
        kind = next(kind for kind in accepted if kind is not type(None))
        optional = type(None) in accepted
        parser.add_argument(
            flag,
            dest=item.name,
            type=_parse_optional(kind) if optional else kind,
            default=argparse.SUPPRESS,
            metavar=item.name.upper(),
            help=item.metadata["help"] + (" ('none' unsets it)" if optional else ""),
        )


def _parse_optional(kind: type):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge dataclass defaults, the recipe (chosen by --recipe or by the task) and the given flags."""
    flags = {
        item.name: getattr(args, item.name)
        for item in dataclasses.fields(TrainConfig)
        if hasattr(args, item.name)
    }
    recipe_name = args.recipe or flags.get("task") or "classification"
    values = load_recipe(recipe_name)
    TrainConfig.from_dict(values, source=f"recipe {recipe_name!r}")  # report recipe errors as such
    values.update(flags)
    return TrainConfig.from_dict(values, source="the command line")


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_config(path: Path) -> TrainConfig:
    """Read the `config.json` a training run wrote."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass a run folder written by `radapter train`.")
    return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))
