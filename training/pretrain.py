"""`radapter pretrain`: contrastive image-text pretraining of a stock open_clip `CLIP` on CPU.

Two recipes share the data, schedule, checkpoints and evaluation:

- `--teacher none` trains both towers jointly with CLIP's symmetric InfoNCE, where images of the
  same concept (the same emoji in other styles) count as positives of each other.
- `--teacher all-MiniLM-L6-v2` (the default) uses frozen all-MiniLM-L6-v2 sentence embeddings of
  the captions. Stage "text" distils the open_clip text tower towards them (cosine regression plus
  in-batch contrast). Stage "image" then trains the image tower and `logit_scale` with the same
  multi-positive InfoNCE against the teacher's caption embeddings. 18k pairs are too few to learn
  language from scratch, and a sentence encoder that has read far more text gives the image
  tower a far better-shaped target. The result is one plain `CLIP`, with no teacher inside.

Every step draws its batch and augmentation from generators seeded by (seed, stage, step), so a run
resumed from a checkpoint repeats the steps that an uninterrupted run would have taken.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from training.augment import AugmentConfig, augment
from training.data.datasets import PROMPT_TEMPLATES, class_display_name, load_classes
from training.pretrain_data import PretrainCorpus, WordNet, concept_of, load_corpus, wordnet_captions
from training.teacher import MINILM, SentenceTeacher

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
TEACHERS = (MINILM, "none")
PROMPT_REPEATS = 4
TEXT_PARAMETER_PREFIXES = (
    "token_embedding",
    "positional_embedding",
    "transformer.",
    "ln_final",
    "text_projection",
)


@dataclass
class PretrainConfig:
    """Settings of one pretraining run; `radapter pretrain --help` documents each field."""

    data_dir: Path
    out_dir: Path
    model: str = "radapter-emoji-vit"
    teacher: str = MINILM
    image_epochs: float = 15.0  # epochs over the images (stage "image", or the joint stage)
    text_epochs: float = 10.0  # epochs over the distillation texts (stage "text")
    batch_size: int = 256  # images per step
    text_batch_size: int = 512  # texts per step of stage "text"
    lr: float = 1e-3
    text_lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05  # share of each stage's steps spent in linear warmup
    precision: str = "bf16"  # "bf16" autocast or "fp32"
    seed: int = 0
    wordnet_captions: bool = True
    eval_every_epochs: float = 1.0  # zero-shot evaluation interval in image epochs; 0 turns it off
    checkpoint_every: int = 200  # steps
    max_steps: int | None = None  # stop every stage after this many steps (tests, probes)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.teacher not in TEACHERS:
            raise ValueError(f"--teacher {self.teacher!r} is unknown; choose one of {TEACHERS}.")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"--precision {self.precision!r} is unknown; choose bf16 or fp32.")
        for name in ("image_epochs", "text_epochs", "batch_size", "text_batch_size", "lr", "text_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} {getattr(self, name)!r} is invalid; it must be positive."
                )
        if self.eval_every_epochs < 0:
            raise ValueError(
                f"--eval-every {self.eval_every_epochs!r} is invalid; pass 0 (off) or a positive number."
            )
        if self.checkpoint_every < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError(
                f"--checkpoint-every {self.checkpoint_every!r} and --max-steps {self.max_steps!r} "
                "are invalid; both must be 1 or more."
            )
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"--warmup-fraction {self.warmup_fraction!r} is invalid; it must lie in [0, 1).")

    @property
    def stages(self) -> tuple[str, ...]:
        return ("joint",) if self.teacher == "none" else ("text", "image")


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Return the learning rate at `step`: linear warmup to `peak`, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    stage_code = {"text": 1, "image": 2, "joint": 3}[stage]
    return torch.Generator().manual_seed(seed * 1_000_003 + stage_code * 100_000_007 + step)


def epoch_order(size: int, seed: int, stage: str, epoch: int) -> torch.Tensor:
    return torch.randperm(size, generator=step_generator(seed, stage, 10_000_000 + epoch))


def batch_indices(size: int, batch_size: int, step: int, seed: int, stage: str) -> torch.Tensor:
    """Return the rows of `step`: consecutive slices of one shuffled order per epoch.

    The last partial batch of an epoch is dropped, so every step has `batch_size` rows.
    """
    per_epoch = max(1, size // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = epoch_order(size, seed, stage, epoch)
    return order[position * batch_size : (position + 1) * batch_size]


def encode_text_trimmed(model: nn.Module, text: torch.Tensor) -> torch.Tensor:
    """Run `CLIP.encode_text` on tokens cut after the batch's longest text.

    The causal mask stops every position from seeing later ones, so padding after the end-of-text
    token never changes the pooled embedding, and dropping it gives the same result (checked in
    tests) at the cost of the real length rather than `context_length`.
    """
    length = int((text != 0).sum(dim=1).max())
    text = text[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()

    x = model.token_embedding(text).to(cast_dtype)  # (B, L, W)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)

    pooled = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, nn.Linear):
        return model.text_projection(pooled)
    return pooled @ model.text_projection  # (B, D)


def length_buckets(tokens: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split text rows into batches of similar token length, so trimmed batches carry little padding."""
    lengths = (tokens != 0).sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def make_optimizer(
    parameters: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """Build AdamW that decays weight matrices only; biases, norms, embeddings and logit_scale are exempt."""
    decay = [p for name, p in parameters if p.ndim >= 2 and "embedding" not in name]
    no_decay = [p for name, p in parameters if not (p.ndim >= 2 and "embedding" not in name)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def stage_parameters(model: nn.Module, stage: str) -> list[tuple[str, nn.Parameter]]:
    """Return the parameters a stage trains: text tower, image tower plus logit_scale, or everything."""
    named = list(model.named_parameters())
    if stage == "text":
        return [(name, p) for name, p in named if name.startswith(TEXT_PARAMETER_PREFIXES)]
    if stage == "image":
        return [(name, p) for name, p in named if name.startswith("visual.") or name == "logit_scale"]
    return named


def multi_positive_nce(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    positives: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric InfoNCE where every (image, text) pair marked in `positives` is a positive.

    Targets spread evenly over the positives of a row. Rows without a positive (texts that match
    no image of the batch) are left out of their direction's mean.

    Args:
        image_features: (B, D) unit image embeddings.
        text_features: (T, D) unit text embeddings.
        positives: (B, T) bool, True where the text describes the image.
        logit_scale: scalar, already exponentiated.
    """
    logits_per_image = logit_scale * image_features @ text_features.T  # (B, T)
    targets = positives.to(logits_per_image.dtype)

    image_rows = targets.sum(dim=1) > 0
    image_targets = targets[image_rows] / targets[image_rows].sum(dim=1, keepdim=True)
    log_probs = F.log_softmax(logits_per_image[image_rows], dim=1)
    loss_image = -(image_targets * log_probs).sum(dim=1).mean()

    text_rows = targets.sum(dim=0) > 0
    text_targets = targets.T[text_rows] / targets.T[text_rows].sum(dim=1, keepdim=True)  # (T', B)
    log_probs = F.log_softmax(logits_per_image.T[text_rows], dim=1)
    loss_text = -(text_targets * log_probs).sum(dim=1).mean()
    return (loss_image + loss_text) / 2


@dataclass
class StageState:
    """What a checkpoint stores beyond weights: where training stopped and what it logged."""

    stage: str
    step: int = 0
    history: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


class Pretrainer:
    """Run the stages of a `PretrainConfig`, checkpointing to and resuming from `out_dir`."""

    def __init__(self, config: PretrainConfig, teacher: SentenceTeacher | None = None) -> None:
        """Build the model, load the corpus and embed its captions with the teacher.

        Args:
            config: Run settings.
            teacher: Overrides the cached all-MiniLM-L6-v2 teacher (tests pass a small fake one).
        """
        self.config = config
        torch.manual_seed(config.seed)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(config.model)
        self.tokenizer = open_clip.get_tokenizer(config.model)
        self.image_size = int(self.model.visual.image_size[0])
        self.corpus = self._load_corpus()
        self.teacher = None
        self.caption_targets: torch.Tensor | None = None
        if config.teacher != "none":
            self.teacher = teacher or SentenceTeacher(
                cache_dir=Path.home() / ".cache" / "radapter" / "teacher"
            )
            self.caption_targets = self.teacher.embed(self.corpus.captions)
            self._check_embed_dim(self.caption_targets.shape[1])
        self.caption_tokens = self.tokenizer(self.corpus.captions)
        self.completed: dict[str, StageState] = {}

    def _load_corpus(self) -> PretrainCorpus:
        manifest = self.config.data_dir / "pretrain.jsonl"
        extra = None
        if self.config.wordnet_captions:
            from training.data.manifest import load_manifest

            records = load_manifest(manifest)
            first_captions: dict[str, list[str]] = {}
            for record in records:
                first_captions.setdefault(concept_of(record), list(record.captions))
            extra = wordnet_captions(first_captions, WordNet())
            logger.info("WordNet captions for %d of %d concepts", len(extra), len(first_captions))
            return load_corpus(records, extra_captions=extra)
        return load_corpus(manifest)

    def _check_embed_dim(self, teacher_dim: int) -> None:
        embed_dim = self.model.text_projection.shape[1]
        if embed_dim != teacher_dim:
            raise ValueError(
                f"model {self.config.model} has embed_dim {embed_dim} but the teacher gives {teacher_dim}-d "
                f"embeddings; use a model config with embed_dim {teacher_dim} or `--teacher none`."
            )

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.precision == "bf16")

    # ----- text stage -----------------------------------------------------------------------------

    def distillation_texts(self) -> list[str]:
        """Return the texts the text tower learns: every caption once, class prompts `PROMPT_REPEATS` times.

        Zero-shot heads are built from the class prompts alone, so they are drawn more often than
        the captions. Prompts exist only when the data folder holds `classes.json`.
        """
        texts = list(self.corpus.captions)
        classes_path = self.config.data_dir / "classes.json"
        if classes_path.is_file():
            names = [class_display_name(name) for name in load_classes(classes_path)]
            prompts = [template.format(name) for name in names for template in PROMPT_TEMPLATES]
            captions = set(self.corpus.captions)
            texts += [prompt for prompt in prompts if prompt not in captions] * PROMPT_REPEATS
        return texts

    def text_step(self, step: int, texts: dict) -> torch.Tensor:
        buckets = texts["buckets"]
        epoch, position = divmod(step, len(buckets))
        rows = buckets[int(epoch_order(len(buckets), self.config.seed, "text", epoch)[position])]
        with self.autocast():
            student = encode_text_trimmed(self.model, texts["tokens"][rows])
        student = F.normalize(student.float(), dim=-1)
        target = texts["targets"][rows]
        cosine_loss = (1.0 - (student * target).sum(dim=1)).mean()
        # The in-batch contrast keeps near-duplicate captions apart, which regression alone blurs.
        logits = student @ target.T / 0.05
        labels = torch.arange(len(rows))
        return cosine_loss + 0.1 * F.cross_entropy(logits, labels)

    # ----- image and joint stages -----------------------------------------------------------------

    def image_step(self, step: int, stage: str) -> torch.Tensor:
        rows = batch_indices(len(self.corpus.images), self.config.batch_size, step, self.config.seed, stage)
        generator = step_generator(self.config.seed, stage, step)
        pixels = augment(self.corpus.images[rows], self.image_size, self.config.augment, generator)
        image_labels = self.corpus.image_concepts[rows]
        caption_ids = self.corpus.sample_captions(generator)
        logit_scale = self.model.logit_scale.exp()

        if stage == "image":
            # Every concept's sampled caption is a candidate, so each image meets all negatives.
            text_features = self.caption_targets[caption_ids]
            with self.autocast():
                image_features = self.model.encode_image(pixels)
        else:
            caption_ids = caption_ids[image_labels]
            with self.autocast():
                image_features = self.model.encode_image(pixels)
                text_features = encode_text_trimmed(self.model, self.caption_tokens[caption_ids])
            text_features = F.normalize(text_features.float(), dim=-1)
        image_features = F.normalize(image_features.float(), dim=-1)
        # A caption shared by several concepts ("a keycap emoji") is a positive of all their images.
        positives = self.corpus.caption_membership[image_labels][:, caption_ids]
        return multi_positive_nce(image_features, text_features, positives, logit_scale)

    # ----- loop -----------------------------------------------------------------------------------

    def run(self) -> dict:
        """Train every stage not yet completed and return the final metrics."""
        state = self._resume()
        for stage in self.config.stages:
            if stage in self.completed:
                continue
            if state is None or state.stage != stage:
                state = StageState(stage=stage)
                self.optimizer = None
            self._train_stage(state)
            if self.config.max_steps is not None and state.step < self._total_steps(stage):
                return {"stopped_at": {"stage": stage, "step": state.step}}
            self.completed[stage] = state
            state = None
        return self._finish()

    def _total_steps(self, stage: str) -> int:
        epochs = self.config.text_epochs if stage == "text" else self.config.image_epochs
        return max(1, round(epochs * self._steps_per_epoch(stage)))

    def _steps_per_epoch(self, stage: str) -> int:
        if stage == "text":
            return math.ceil(len(self.distillation_texts()) / self.config.text_batch_size)
        return max(1, len(self.corpus.images) // self.config.batch_size)

    def _train_stage(self, state: StageState) -> None:
        stage, config = state.stage, self.config
        total = self._total_steps(stage)
        stop = total if config.max_steps is None else min(total, config.max_steps)
        peak = config.text_lr if stage == "text" else config.lr
        warmup = max(1, round(config.warmup_fraction * total))
        parameters = stage_parameters(self.model, stage)
        if getattr(self, "optimizer", None) is None:
            self.optimizer = make_optimizer(parameters, peak, config.weight_decay)
        texts = self._text_targets() if stage == "text" else None
        per_epoch = self._steps_per_epoch(stage)
        self.model.train()
        epoch_losses: list[float] = []
        progress = tqdm(
            range(state.step, stop), desc=f"pretrain {stage}", unit="step", initial=state.step, total=stop
        )
        started = time.perf_counter()
        for step in progress:
            for group in self.optimizer.param_groups:
                group["lr"] = cosine_lr(step, total, peak, warmup)
            loss = self.text_step(step, texts) if stage == "text" else self.image_step(step, stage)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in parameters], 1.0)
            self.optimizer.step()
            with torch.no_grad():
                # CLIP clamps the temperature at 100 so logits cannot blow up.
                self.model.logit_scale.clamp_(0, math.log(100))
            value = float(loss.detach())
            state.losses.append(value)
            epoch_losses.append(value)
            state.step = step + 1
            progress.set_postfix(loss=f"{value:.3f}")
            if state.step % per_epoch == 0 or state.step == stop:
                state.seconds += time.perf_counter() - started
                started = time.perf_counter()
                self._end_epoch(state, epoch_losses, per_epoch)
                epoch_losses = []
            if state.step % config.checkpoint_every == 0 or state.step == stop:
                state.seconds += time.perf_counter() - started
                started = time.perf_counter()
                self._save_checkpoint(state)

    def _end_epoch(self, state: StageState, losses: list[float], per_epoch: int) -> None:
        epoch = state.step / per_epoch
        record: dict = {
            "epoch": round(epoch, 3),
            "step": state.step,
            "loss": sum(losses) / max(1, len(losses)),
        }
        record["seconds"] = round(state.seconds, 1)
        interval = self.config.eval_every_epochs
        is_last = state.step >= self._total_steps(state.stage)
        if (
            state.stage != "text"
            and interval > 0
            and (is_last or abs(epoch / interval - round(epoch / interval)) < 1e-6)
        ):
            record.update(self.zero_shot(retrieval=False))
        state.history.append(record)
        logger.info("%s epoch %s: %s", state.stage, record["epoch"], json.dumps(record))
        self.model.train()

    def _text_targets(self) -> dict:
        texts = self.distillation_texts()
        distinct = sorted(set(texts))
        targets = self.teacher.embed(distinct)
        position = {text: index for index, text in enumerate(distinct)}
        rows = torch.tensor([position[text] for text in texts])
        tokens = self.tokenizer(texts)
        buckets = length_buckets(tokens, self.config.text_batch_size)
        return {"tokens": tokens, "targets": targets[rows], "buckets": buckets}

    def zero_shot(self, retrieval: bool, head: torch.Tensor | None = None) -> dict:
        """Evaluate zero-shot top-1 (and retrieval) when the data folder holds the benchmark manifests."""
        from training.zero_shot import evaluate_benchmark

        if not (self.config.data_dir / "id-test.jsonl").is_file():
            return {}
        with self.autocast():
            metrics = evaluate_benchmark(
                self.model, self.tokenizer, self.preprocess, self.config.data_dir, retrieval, head=head
            )
        return {name: round(value, 4) for name, value in metrics.items()}

    def teacher_head(self) -> torch.Tensor:
        """Build the zero-shot head from teacher embeddings of the class prompts, bypassing the text tower."""
        names = [class_display_name(name) for name in load_classes(self.config.data_dir / "classes.json")]
        prompts = [template.format(name) for name in names for template in PROMPT_TEMPLATES]
        embeddings = self.teacher.embed(prompts).view(len(names), len(PROMPT_TEMPLATES), -1)
        return F.normalize(embeddings.mean(dim=1), dim=-1)

    # ----- checkpoints ----------------------------------------------------------------------------

    def _save_checkpoint(self, state: StageState) -> None:
        self.config.out_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": _config_dict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": asdict(state),
            "completed": {name: asdict(done) for name, done in self.completed.items()},
        }
        temporary = self.config.out_dir / (CHECKPOINT_NAME + ".tmp")
        torch.save(payload, temporary)
        temporary.replace(self.config.out_dir / CHECKPOINT_NAME)

    def _resume(self) -> StageState | None:
        path = self.config.out_dir / CHECKPOINT_NAME
        if not path.is_file():
            return None
        payload = torch.load(path, map_location="cpu", weights_only=False)
        saved = payload["config"]
        if saved["model"] != self.config.model or saved["teacher"] != self.config.teacher:
            raise ValueError(
                f"checkpoint {path} was written for --model {saved['model']} --teacher {saved['teacher']}; "
                "pass the same values to resume or use another --out directory."
            )
        self.model.load_state_dict(payload["model"])
        self.completed = {name: StageState(**done) for name, done in payload["completed"].items()}
        state = StageState(**payload["state"])
        self.optimizer = make_optimizer(
            stage_parameters(self.model, state.stage), 1.0, self.config.weight_decay
        )
        self.optimizer.load_state_dict(payload["optimizer"])
        logger.info("resumed from %s at stage %s step %d", path, state.stage, state.step)
        if state.step >= self._total_steps(state.stage):
            self.completed[state.stage] = state
        return state

    def _finish(self) -> dict:
        metrics = self.zero_shot(retrieval=True)
        if self.teacher is not None and metrics:
            # The same image tower scored against the teacher's own prompt embeddings shows how much
            # accuracy the distilled text tower loses.
            teacher_metrics = self.zero_shot(retrieval=False, head=self.teacher_head())
            metrics.update({f"teacher-head/{name}": value for name, value in teacher_metrics.items()})
        out = self.config.out_dir
        export_weights(self.model, out / "model.safetensors")
        seconds = sum(state.seconds for state in self.completed.values())
        summary = {
            "model": self.config.model,
            "train_seconds": round(seconds, 1),
            "stages": {
                name: {"history": state.history, "seconds": round(state.seconds, 1)}
                for name, state in self.completed.items()
            },
            "metrics": metrics,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary


def export_weights(model: nn.Module, path: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write a model's state dict as safetensors in `dtype` (float16 halves the size of float32)."""
    tensors = {name: tensor.detach().to(dtype).contiguous() for name, tensor in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def _config_dict(config: PretrainConfig) -> dict:
    values = asdict(config)
    values["data_dir"], values["out_dir"] = str(config.data_dir), str(config.out_dir)
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default_data = Path.home() / ".cache" / "radapter" / "emoji-renditions"
    parser.add_argument(
        "--data", type=Path, default=default_data, help="benchmark folder with pretrain.jsonl"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/pretrain"), help="folder for checkpoints and weights"
    )
    parser.add_argument("--model", default="radapter-emoji-vit", help="open_clip architecture name")
    parser.add_argument(
        "--model-config", type=Path, help="extra open_clip JSON model config to register first"
    )
    parser.add_argument(
        "--teacher", default=MINILM, choices=TEACHERS, help="frozen sentence-embedding teacher"
    )
    parser.add_argument("--image-epochs", type=float, default=15.0, help="epochs over the pretraining images")
    parser.add_argument("--text-epochs", type=float, default=10.0, help="epochs over the distillation texts")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step")
    parser.add_argument("--text-batch-size", type=int, default=512, help="texts per step of the text stage")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate of the image stage")
    parser.add_argument(
        "--text-lr", type=float, default=2e-3, help="peak AdamW learning rate of the text stage"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=0.1, help="AdamW weight decay on weight matrices"
    )
    parser.add_argument(
        "--warmup-fraction", type=float, default=0.05, help="share of each stage in linear warmup"
    )
    parser.add_argument(
        "--precision", default="bf16", choices=("bf16", "fp32"), help="CPU autocast precision"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of initialisation, batches and augmentation"
    )
    parser.add_argument(
        "--min-scale", type=float, default=0.8, help="smallest random crop side, as a fraction"
    )
    parser.add_argument("--max-rotation", type=float, default=5.0, help="largest random rotation in degrees")
    parser.add_argument(
        "--style-prob",
        type=float,
        default=1.0,
        help="multiplier on the greyscale, line-art and silhouette rates",
    )
    parser.add_argument(
        "--no-wordnet", action="store_true", help="skip the WordNet hypernym and gloss captions"
    )
    parser.add_argument(
        "--eval-every", type=float, default=1.0, help="zero-shot evaluation interval in epochs"
    )
    parser.add_argument("--checkpoint-every", type=int, default=200, help="checkpoint interval in steps")
    parser.add_argument("--max-steps", type=int, help="stop each stage after this many steps (resume later)")
    parser.add_argument(
        "--threads",
        type=int,
        help="intra-op CPU threads (default: torch's choice); 1 can be faster when other jobs share the CPU",
    )


def run(args: argparse.Namespace) -> int:
    from training import embedded

    embedded.register()
    if args.model_config is not None:
        if not args.model_config.is_file():
            raise FileNotFoundError(
                f"--model-config {args.model_config} does not exist; pass a JSON model config."
            )
        open_clip.add_model_config(args.model_config)
    if args.model not in open_clip.list_models():
        raise ValueError(
            f"--model {args.model!r} is not a registered open_clip architecture; see --model-config."
        )
    if not (args.data / "pretrain.jsonl").is_file():
        raise FileNotFoundError(
            f"{args.data / 'pretrain.jsonl'} not found; run `radapter data build` or pass --data."
        )
    config = PretrainConfig(
        data_dir=args.data,
        out_dir=args.out,
        model=args.model,
        teacher=args.teacher,
        image_epochs=args.image_epochs,
        text_epochs=args.text_epochs,
        batch_size=args.batch_size,
        text_batch_size=args.text_batch_size,
        lr=args.lr,
        text_lr=args.text_lr,
        weight_decay=args.weight_decay,
        warmup_fraction=args.warmup_fraction,
        precision=args.precision,
        seed=args.seed,
        wordnet_captions=not args.no_wordnet,
        eval_every_epochs=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        max_steps=args.max_steps,
        augment=AugmentConfig(
            min_scale=args.min_scale,
            max_rotation=args.max_rotation,
            grayscale_prob=AugmentConfig.grayscale_prob * args.style_prob,
            line_art_prob=AugmentConfig.line_art_prob * args.style_prob,
            silhouette_prob=AugmentConfig.silhouette_prob * args.style_prob,
        ),
    )
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads} is invalid; pass 1 or more.")
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    summary = Pretrainer(config).run()
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary.get("metrics", summary), indent=2))
    logger.info("pretraining took %.1f s wall", summary["wall_seconds"])
    return 0
