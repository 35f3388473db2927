"""Zero-shot evaluation of open_clip models: classifier heads from prompts, top-1, retrieval recall@k."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from training.data.datasets import (
    PROMPT_TEMPLATES,
    ClassificationDataset,
    RetrievalDataset,
    class_display_name,
    load_classes,
)
from training.data.manifest import ManifestRecord, load_manifest

Tokenizer = Callable[[Sequence[str]], torch.Tensor]
Transform = Callable

RECALL_KS = (1, 5, 10)


@torch.no_grad()
def encode_texts(
    model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """Encode texts with `model.encode_text` into (N, D) unit vectors."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start : start + batch_size]))
        chunks.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


@torch.no_grad()
def encode_images(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every image of a loader of (image, target, ...) batches; return unit embeddings and targets."""
    embeddings, targets = [], []
    for batch in loader:
        images, target = batch[0], batch[-1]
        embeddings.append(F.normalize(model.encode_image(images).float(), dim=-1))
        targets.append(torch.as_tensor(target))
    return torch.cat(embeddings), torch.cat(targets)


def build_classifier(
    model: nn.Module,
    tokenizer: Tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] = PROMPT_TEMPLATES,
) -> torch.Tensor:
    """Build a zero-shot head: per class, the renormalised mean of its prompt embeddings.

    Returns:
        (C, D) unit class embeddings; `image_embeddings @ head.T` gives class logits.
    """
    if not class_names:
        raise ValueError("class_names is empty; a classifier head needs at least one class.")
    if not templates or any("{}" not in template for template in templates):
        raise ValueError(f"templates {list(templates)!r} must be non-empty and each contain `{{}}`.")
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = encode_texts(model, tokenizer, prompts).view(len(class_names), len(templates), -1)
    return F.normalize(embeddings.mean(dim=1), dim=-1)


def top1_accuracy(model: nn.Module, head: torch.Tensor, loader: DataLoader) -> float:
    """Return the fraction of images whose highest-scoring class in `head` is their label."""
    embeddings, labels = encode_images(model, loader)
    predictions = (embeddings @ head.T).argmax(dim=1)
    return float((predictions == labels).float().mean())


def classification_accuracy(
    model: nn.Module,
    tokenizer: Tokenizer,
    transform: Transform,
    manifest: str | Path | Sequence[ManifestRecord],
    classes: Sequence[str],
    head: torch.Tensor | None = None,
    batch_size: int = 128,
) -> float:
    """Return zero-shot top-1 on a classification manifest, building the head from `classes` if not given."""
    dataset = ClassificationDataset(manifest, transform, classes=classes)
    if head is None:
        head = build_classifier(model, tokenizer, dataset.class_names)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return top1_accuracy(model, head, loader)


def recall_at_k(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    text_image_index: torch.Tensor,
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, float]:
    """Compute retrieval recall@k in both directions.

    Args:
        image_embeddings: (I, D) unit embeddings, one per distinct image.
        text_embeddings: (T, D) unit embeddings.
        text_image_index: (T,) index of each text's image in `image_embeddings`.

    Returns:
        `image_to_text_R@k`: share of images with a matching text among their top k texts.
        `text_to_image_R@k`: share of texts whose image is among their top k images.
    """
    scores = image_embeddings @ text_embeddings.T  # (I, T)
    matches = text_image_index[None, :] == torch.arange(image_embeddings.shape[0])[:, None]  # (I, T)
    results = {}
    for k in ks:
        top_texts = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (I, k)
        hit_image = matches.gather(1, top_texts).any(dim=1)
        top_images = scores.T.topk(min(k, scores.shape[0]), dim=1).indices  # (T, k)
        hit_text = top_images == text_image_index[:, None]
        results[f"image_to_text_R@{k}"] = float(hit_image.float().mean())
        results[f"text_to_image_R@{k}"] = float(hit_text.any(dim=1).float().mean())
    return results


@torch.no_grad()
def retrieval_recall(
    model: nn.Module,
    tokenizer: Tokenizer,
    transform: Transform,
    manifest: str | Path | Sequence[ManifestRecord],
    ks: Sequence[int] = RECALL_KS,
    batch_size: int = 128,
) -> dict[str, float]:
    """Return zero-shot recall@k both directions on a retrieval manifest (`caption` per row)."""
    dataset = RetrievalDataset(manifest, transform)
    images: dict[int, torch.Tensor] = {}
    captions, caption_images = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for pixels, texts, indices in loader:
        new = [position for position, index in enumerate(indices.tolist()) if index not in images]
        if new:
            embedded = F.normalize(model.encode_image(pixels[new]).float(), dim=-1)
            for row, position in enumerate(new):
                images[int(indices[position])] = embedded[row]
        captions.extend(texts)
        caption_images.extend(indices.tolist())
    order = sorted(images)
    if order != list(range(len(order))):
        raise ValueError("retrieval manifest image indices are not contiguous; every image needs a caption.")
    image_embeddings = torch.stack([images[index] for index in order])
    text_embeddings = encode_texts(model, tokenizer, captions)
    return recall_at_k(image_embeddings, text_embeddings, torch.tensor(caption_images), ks)


def evaluate_benchmark(
    model: nn.Module,
    tokenizer: Tokenizer,
    transform: Transform,
    data_dir: str | Path,
    retrieval: bool = True,
    head: torch.Tensor | None = None,
) -> dict[str, float]:
    """Evaluate zero-shot top-1 on id-test and every ood-* manifest, and retrieval on retrieval-test-*.

    Args:
        head: (C, D) class embeddings in `classes.json` order to use in place of the model's own
            prompt embeddings, for example a teacher's; retrieval always uses the model's text tower.

    Returns:
        Flat metrics: `id-test`, each `ood-STYLE`, `ood-mean`, and for retrieval
        `retrieval-STYLE/<metric>` plus `retrieval-id/<metric>` (noto) and `retrieval-ood/<metric>`
        (mean over the other styles).
    """
    data_dir = Path(data_dir)
    classes = load_classes(data_dir / "classes.json")
    was_training = model.training
    model.eval()
    if head is None:
        head = build_classifier(model, tokenizer, [class_display_name(name) for name in classes])

    metrics: dict[str, float] = {}
    for path in sorted(data_dir.glob("id-test.*")) + sorted(data_dir.glob("ood-*.*")):
        metrics[path.stem] = classification_accuracy(
            model, tokenizer, transform, load_manifest(path), classes, head
        )
    ood = [value for name, value in metrics.items() if name.startswith("ood-")]
    if ood:
        metrics["ood-mean"] = sum(ood) / len(ood)

    if retrieval:
        metrics.update(_retrieval_metrics(model, tokenizer, transform, data_dir))
    model.train(was_training)
    return metrics


def _retrieval_metrics(model: nn.Module, tokenizer: Tokenizer, transform: Transform, data_dir: Path) -> dict:
    per_style = {}
    for path in sorted(data_dir.glob("retrieval-test-*.*")):
        style = path.stem.removeprefix("retrieval-test-")
        per_style[style] = retrieval_recall(model, tokenizer, transform, path)
    metrics = {
        f"retrieval-{style}/{name}": value
        for style, values in per_style.items()
        for name, value in values.items()
    }
    if "noto" in per_style:
        metrics.update({f"retrieval-id/{name}": value for name, value in per_style["noto"].items()})
    others = [values for style, values in per_style.items() if style != "noto"]
    for name in others[0] if others else ():
        metrics[f"retrieval-ood/{name}"] = sum(values[name] for values in others) / len(others)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate a registered open_clip architecture with local weights on the benchmark and print JSON."""
    import argparse
    import json

    import open_clip

    from training import embedded

    parser = argparse.ArgumentParser(prog="python -m training.zero_shot", description=main.__doc__)
    parser.add_argument("--model", default=embedded.ARCHITECTURE, help="open_clip architecture name")
    parser.add_argument("--weights", type=Path, default=embedded.WEIGHTS_PATH, help="safetensors file")
    default_data = Path.home() / ".cache" / "radapter" / "emoji-renditions"
    parser.add_argument("--data", type=Path, default=default_data, help="folder `radapter data build` wrote")
    args = parser.parse_args(argv)

    embedded.register()
    if not args.weights.is_file():
        raise SystemExit(f"--weights {args.weights} not found; pass a safetensors file.")
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=str(args.weights))
    metrics = evaluate_benchmark(model, open_clip.get_tokenizer(args.model), preprocess, args.data)
    print(json.dumps({name: round(value, 4) for name, value in metrics.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
