"""`radapter export-onnx`: image and text encoders as ONNX files, with a parity report against PyTorch."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .models import load_base_model, prepare_output_dir

logger = logging.getLogger(__name__)

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
PARITY_FILE = "parity.json"
DEFAULT_OPSET = 18
# The newest opset that torch 2.14's exporter and ONNX Runtime 1.32 both handled for these encoders:
# parity passed at 23 here. Opset 99 exported a graph that ONNX Runtime rejected.
MAX_OPSET = 23
PARITY_BATCH_SIZES = (1, 8, 33)
# Float32 graphs reorder reductions differently from torch eager. On unit-norm embeddings of a
# random-init ViT-B-16 that moved values by at most 1.8e-7 (`radapter export-onnx`, CPU provider),
# so anything beyond these bounds is a real divergence.
MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.9999


class ImageEncoder(nn.Module):
    """`pixel_values (B, 3, H, W)` -> L2-normalised `image_embeddings (B, D)`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixel_values), dim=-1)


class TextEncoder(nn.Module):
    """`input_ids (B, context_length)` int64 -> L2-normalised `text_embeddings (B, D)`.

    open_clip 3.x pools the text tower at the end-of-text token, found by `argmax` over the token ids
    because EOT has the largest id. The exported graph keeps that ArgMax and gather, so each row
    pools at its own EOT position whatever the batch size.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(input_ids), dim=-1)


def image_size(model: nn.Module) -> tuple[int, int]:
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def context_length(model: nn.Module) -> int:
    return int(getattr(model, "context_length", None) or model.text.context_length)


def _export(
    module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str, opset: int
) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=[input_name],
        output_names=[output_name],
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def check_opset(opset: int) -> None:
    """Reject opsets outside the range this exporter and ONNX Runtime were checked with."""
    if opset < 17:
        raise ValueError(f"opset {opset} is too old; use 17 or newer (LayerNormalization is opset 17).")
    if opset > MAX_OPSET:
        raise ValueError(
            f"opset {opset} is newer than {MAX_OPSET}, the newest checked here; use 17 to {MAX_OPSET}."
        )


def export_encoders(model: nn.Module, output_dir: str | Path, opset: int = DEFAULT_OPSET) -> dict[str, Path]:
    """Export the image and text encoders of an open_clip model to ONNX with a dynamic batch axis.

    Returns:
        `{"image": path, "text": path}`.
    """
    check_opset(opset)
    output_dir = prepare_output_dir(Path(output_dir), "output directory")
    model = model.float().eval()
    height, width = image_size(model)
    paths = {"image": output_dir / IMAGE_FILE, "text": output_dir / TEXT_FILE}
    try:
        with torch.no_grad():
            images = torch.zeros(2, 3, height, width)
            _export(
                ImageEncoder(model).eval(), images, paths["image"], "pixel_values", "image_embeddings", opset
            )
            tokens = torch.zeros(2, context_length(model), dtype=torch.long)
            _export(TextEncoder(model).eval(), tokens, paths["text"], "input_ids", "text_embeddings", opset)
    except BaseException:
        for path in paths.values():  # never leave one encoder without the other
            path.unlink(missing_ok=True)
        raise
    logger.info("exported %s and %s", paths["image"], paths["text"])
    return paths


def parity_inputs(
    model: nn.Module, tokenizer, batch_size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return random images and captions of varied lengths, some longer than the context, for a batch."""
    generator = torch.Generator().manual_seed(seed + batch_size)
    images = torch.randn(batch_size, 3, *image_size(model), generator=generator)
    words = ["a", "photo", "of", "the", "red", "fox", "emoji", "smiling", "cat", "in", "snow", "drawn"]
    captions = []
    for index in range(batch_size):
        length = 1 + (index * 7) % (context_length(model) + 8)  # spans short, full and truncated texts
        captions.append(" ".join(words[(index + k) % len(words)] for k in range(length)))
    return images, tokenizer(captions)


def parity_report(
    model: nn.Module, paths: dict[str, Path], tokenizer, providers: list[str] | None = None
) -> dict:
    """Compare ONNX Runtime with PyTorch eager on both encoders at several batch sizes."""
    import onnxruntime as ort

    providers = providers or ["CPUExecutionProvider"]
    sessions = {kind: ort.InferenceSession(str(path), providers=providers) for kind, path in paths.items()}
    encoders = {"image": ImageEncoder(model.float().eval()), "text": TextEncoder(model.float().eval())}
    rows = []
    for batch_size in PARITY_BATCH_SIZES:
        images, tokens = parity_inputs(model, tokenizer, batch_size)
        for kind, inputs in (("image", images), ("text", tokens)):
            with torch.no_grad():
                expected = encoders[kind](inputs)
            name = sessions[kind].get_inputs()[0].name
            actual = torch.from_numpy(sessions[kind].run(None, {name: inputs.numpy()})[0])
            cosine = F.cosine_similarity(actual, expected, dim=-1)
            rows.append(
                {
                    "encoder": kind,
                    "batch_size": batch_size,
                    "max_abs_diff": float((actual - expected).abs().max()),
                    "min_cosine": float(cosine.min()),
                }
            )
    passed = all(row["max_abs_diff"] <= MAX_ABS_DIFF and row["min_cosine"] >= MIN_COSINE for row in rows)
    return {
        "providers": sessions["image"].get_providers(),
        "tolerance": {"max_abs_diff": MAX_ABS_DIFF, "min_cosine": MIN_COSINE},
        "passed": passed,
        "results": rows,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, help="open_clip architecture name, e.g. ViT-B-16")
    parser.add_argument(
        "--pretrained", required=True, help="merged or base weights: a local file or a pretrained tag"
    )
    parser.add_argument(
        "--output-dir", required=True, type=Path, help="directory for the ONNX files and parity.json"
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, 17 or newer (default {DEFAULT_OPSET})"
    )


def run(args: argparse.Namespace) -> int:
    check_opset(args.opset)
    prepare_output_dir(args.output_dir, "--output-dir")
    model = load_base_model(args.arch, args.pretrained)
    paths = export_encoders(model, args.output_dir, args.opset)
    report = parity_report(model, paths, open_clip.get_tokenizer(args.arch))
    (args.output_dir / PARITY_FILE).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'encoder':<8} {'batch':>5} {'max abs diff':>13} {'min cosine':>11}")
    for row in report["results"]:
        encoder, batch_size = row["encoder"], row["batch_size"]
        print(f"{encoder:<8} {batch_size:>5} {row['max_abs_diff']:>13.2e} {row['min_cosine']:>11.7f}")
    verdict = "passed" if report["passed"] else "FAILED"
    tolerance = f"max abs diff <= {MAX_ABS_DIFF}, cosine >= {MIN_COSINE}"
    print(f"parity {verdict} ({tolerance}); report: {args.output_dir / PARITY_FILE}")
    return 0 if report["passed"] else 1
