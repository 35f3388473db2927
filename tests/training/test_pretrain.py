"""Pretraining on a tiny generated manifest: the loss falls, a resumed run repeats steps, bad input fails."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import open_clip
import pytest
import torch
from helpers import TINY, make_tiny_model
from PIL import Image

from training.augment import AugmentConfig, augment
from training.pretrain import PretrainConfig, Pretrainer, cosine_lr, encode_text_trimmed, multi_positive_nce
from training.pretrain_data import load_corpus
from training.teacher import SentenceTeacher

NO_AUGMENT = AugmentConfig(
    min_scale=1.0,
    max_rotation=0.0,
    flip_prob=0.0,
    jitter=0.0,
    grayscale_prob=0.0,
    line_art_prob=0.0,
    silhouette_prob=0.0,
)
COLORS = [(220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 190, 30)]


class HashEncoder:
    """A deterministic stand-in for a sentence encoder: 16-d vectors seeded by each text's sha256."""

    def encode(self, texts, batch_size=32, convert_to_tensor=True):
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            rows.append(torch.randn(16, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows)


def write_fixture(root: Path, one_caption: bool = False) -> Path:
    """Write 8 RGBA images of 4 concepts (two styles each) and a pretraining manifest.

    With `one_caption`, each concept has a single caption, so every step sees the same pairs.
    """
    (root / "images").mkdir(parents=True)
    rows = []
    for concept, color in enumerate(COLORS):
        for style in ("disc", "square"):
            image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
            pixels = image.load()
            for y in range(64):
                for x in range(64):
                    inside = (
                        (x - 32) ** 2 + (y - 32) ** 2 < 400
                        if style == "disc"
                        else 12 < x < 52 and 20 < y < 44
                    )
                    if inside:
                        pixels[x, y] = (*color, 255)
            path = f"images/{style}-{concept}.png"
            image.save(root / path)
            captions = [f"colour number {concept}"]
            if not one_caption:
                captions.insert(0, f"a {style} of colour {concept}")
            rows.append({"image": path, "captions": captions, "concept": f"C{concept}", "style": style})
    manifest = root / "pretrain.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return root


def tiny_config(data_dir: Path, out_dir: Path, **overrides) -> PretrainConfig:
    values = dict(
        data_dir=data_dir,
        out_dir=out_dir,
        model=TINY,
        teacher="none",
        image_epochs=4.0,
        text_epochs=4.0,
        batch_size=8,
        text_batch_size=8,
        lr=5e-3,
        text_lr=5e-3,
        precision="fp32",
        wordnet_captions=False,
        eval_every_epochs=0.0,
        checkpoint_every=1,
    )
    values.update(overrides)
    return PretrainConfig(**values)


def hash_teacher() -> SentenceTeacher:
    return SentenceTeacher(encoder=HashEncoder(), cache_dir=None, name="hash")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_fixture(tmp_path / "data")


def test_joint_two_steps_lower_loss(tmp_path: Path) -> None:
    # One caption per concept and no augmentation: both steps score the same batch.
    data_dir = write_fixture(tmp_path / "data", one_caption=True)
    config = tiny_config(data_dir, tmp_path / "run", max_steps=2, augment=NO_AUGMENT)
    trainer = Pretrainer(config)
    trainer.run()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["state"]
    first, second = state["losses"]
    assert second < first, f"loss rose from {first:.4f} to {second:.4f}"


def test_distill_stages_lower_loss(data_dir: Path, tmp_path: Path) -> None:
    # The tiny config's embed_dim (16) matches the hash teacher, so the distillation path runs.
    data_dir = write_fixture(tmp_path / "one-caption", one_caption=True)
    config = tiny_config(data_dir, tmp_path / "run", teacher="all-MiniLM-L6-v2", augment=NO_AUGMENT)
    trainer = Pretrainer(config, teacher=hash_teacher())
    summary = trainer.run()
    assert (tmp_path / "run" / "model.safetensors").is_file()
    for stage in ("text", "image"):
        losses = trainer.completed[stage].losses
        assert len(losses) == 4, stage
        assert losses[-1] < losses[0], f"{stage} loss rose from {losses[0]:.4f} to {losses[-1]:.4f}"
    assert set(summary["stages"]) == {"text", "image"}


def test_resume_repeats_next_loss(data_dir: Path, tmp_path: Path) -> None:
    straight = Pretrainer(tiny_config(data_dir, tmp_path / "straight", max_steps=3))
    straight.run()
    expected = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["state"]["losses"]

    Pretrainer(tiny_config(data_dir, tmp_path / "resumed", max_steps=2)).run()
    resumed = Pretrainer(tiny_config(data_dir, tmp_path / "resumed", max_steps=3))
    resumed.run()
    losses = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["state"]["losses"]

    assert len(losses) == 3
    # Same seeds, same ops, same order on CPU: the resumed step must match bit for bit.
    torch.testing.assert_close(torch.tensor(losses[2]), torch.tensor(expected[2]), rtol=0, atol=0)


def test_resume_rejects_other_model(data_dir: Path, tmp_path: Path) -> None:
    Pretrainer(tiny_config(data_dir, tmp_path / "run", max_steps=1)).run()
    with pytest.raises(ValueError, match="pass the same values"):
        Pretrainer(
            tiny_config(data_dir, tmp_path / "run", teacher="all-MiniLM-L6-v2"), teacher=hash_teacher()
        ).run()


def test_config_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--teacher 'bert'"):
        tiny_config(tmp_path, tmp_path, teacher="bert")
    with pytest.raises(ValueError, match="--batch-size 0"):
        tiny_config(tmp_path, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="--precision 'fp16'"):
        tiny_config(tmp_path, tmp_path, precision="fp16")
    with pytest.raises(ValueError, match="--eval-every -1.0"):
        tiny_config(tmp_path, tmp_path, eval_every_epochs=-1.0)
    with pytest.raises(ValueError, match="--max-steps 0"):
        tiny_config(tmp_path, tmp_path, max_steps=0)


def test_corpus_groups_captions_by_concept(data_dir: Path) -> None:
    corpus = load_corpus(data_dir / "pretrain.jsonl")
    assert corpus.images.shape == (8, 3, 64, 64)
    assert corpus.images.dtype == torch.uint8
    assert corpus.concepts == ["C0", "C1", "C2", "C3"]
    # Two styles with two captions each, one of them shared: three distinct captions per concept.
    assert corpus.caption_counts.tolist() == [3, 3, 3, 3]
    drawn = corpus.sample_captions(torch.Generator().manual_seed(0))
    for concept, caption in enumerate(drawn.tolist()):
        assert caption in corpus.caption_table[concept].tolist()


def test_corpus_rejects_rows_without_captions(tmp_path: Path) -> None:
    manifest = tmp_path / "pretrain.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "label": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no `captions`"):
        load_corpus(manifest)


def test_augment_shape_and_determinism() -> None:
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    first = augment(images, 48, AugmentConfig(), torch.Generator().manual_seed(3))
    second = augment(images, 48, AugmentConfig(), torch.Generator().manual_seed(3))
    assert first.shape == (6, 3, 48, 48)
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_multi_positive_nce_prefers_matches() -> None:
    features = torch.eye(4)
    positives = torch.eye(4, dtype=torch.bool)
    matched = multi_positive_nce(features, features, positives, torch.tensor(20.0))
    shuffled = multi_positive_nce(features, features.roll(1, dims=0), positives, torch.tensor(20.0))
    assert matched < 0.01
    assert shuffled > 5.0


def test_multi_positive_nce_shared_caption() -> None:
    # Images 0 and 1 share text 0, so the loss is lowest when both point at it equally.
    images = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[True, False], [True, False], [False, True]])
    shared = multi_positive_nce(images, texts, positives, torch.tensor(20.0))
    one_owner = multi_positive_nce(
        images, texts, torch.tensor([[True, False], [False, True], [False, True]]), torch.tensor(20.0)
    )
    # Text 0's target is split over images 0 and 1, whose logits are equal, so its row keeps
    # log 2. Averaged over the two text rows and then the two directions, that gives log 2 / 4.
    torch.testing.assert_close(shared, torch.log(torch.tensor(2.0)) / 4, atol=1e-4, rtol=0)
    assert one_owner > shared


def test_corpus_membership_marks_shared_captions(data_dir: Path) -> None:
    corpus = load_corpus(data_dir / "pretrain.jsonl")
    for concept in range(len(corpus.concepts)):
        members = corpus.caption_membership[concept].nonzero().flatten().tolist()
        assert sorted(members) == sorted(
            corpus.caption_table[concept][: corpus.caption_counts[concept]].tolist()
        )


def test_cosine_lr_warmup_and_decay() -> None:
    assert cosine_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert cosine_lr(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert cosine_lr(100, 100, 1.0, 10) == pytest.approx(0.0)


def test_trimmed_text_matches_encode_text() -> None:
    model = make_tiny_model()
    tokenizer = open_clip.get_tokenizer(TINY)
    tokens = tokenizer(["a fox", "an emoji of an animal mammal", "x"])
    with torch.no_grad():
        expected = model.encode_text(tokens)
        trimmed = encode_text_trimmed(model, tokens)
    torch.testing.assert_close(trimmed, expected)
