"""`radapter merge`: fold an R-Adapter into its base model and write plain open_clip weights."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

from .models import load_base_model, prepare_output_dir, weights_sha256
from .radapter import check_base_matches, load_adapter, merge_overlay

logger = logging.getLogger(__name__)


def merge_adapter_into_base(
    base_tensors: dict[str, torch.Tensor],
    adapter_dir: str | Path,
    architecture: str,
    alpha: float | None = None,
) -> tuple[dict[str, torch.Tensor], float]:
    """Return the merged state dict and the alpha used, after checking the adapter fits the base.

    `alpha=None` uses the adapter's default from `adapter.json`.
    """
    adapter_tensors, metadata = load_adapter(adapter_dir)
    check_base_matches(metadata, architecture, weights_sha256(base_tensors))
    alpha = metadata.config.alpha if alpha is None else alpha
    merged = dict(base_tensors)
    merged.update(merge_overlay(base_tensors, adapter_tensors, alpha))
    return merged, alpha


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--adapter", required=True, type=Path, help="adapter directory (adapter.safetensors + adapter.json)"
    )
    parser.add_argument(
        "--pretrained", required=True, help="base weights: an open_clip pretrained tag or a local file"
    )
    parser.add_argument(
        "--arch", help="open_clip architecture name (default: the one recorded in adapter.json)"
    )
    parser.add_argument(
        "--alpha", type=float, help="re-scaling factor in [0, 1] (default: the adapter's own)"
    )
    parser.add_argument("--output", required=True, type=Path, help="path of the merged .safetensors file")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip reloading the output with stock open_clip (strict keys)",
    )


def run(args: argparse.Namespace) -> int:
    if args.output.suffix != ".safetensors":
        raise ValueError(
            f"--output {args.output} must end in .safetensors; open_clip picks the loader by suffix."
        )
    if args.output.is_dir():
        raise ValueError(f"--output {args.output} is a directory; pass a file path ending in .safetensors.")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:  # also rejects NaN
        raise ValueError(f"--alpha {args.alpha} is invalid; pass a value in [0, 1].")
    prepare_output_dir(args.output.parent, "--output's directory")
    _, metadata = load_adapter(args.adapter)
    architecture = args.arch or metadata.base_architecture

    start = time.perf_counter()
    base = load_base_model(architecture, args.pretrained)
    merged, alpha = merge_adapter_into_base(base.state_dict(), args.adapter, architecture, args.alpha)
    tensors = {name: tensor.contiguous() for name, tensor in merged.items()}
    save_file(tensors, str(args.output), metadata={"architecture": architecture, "alpha": str(alpha)})
    args.output.chmod(0o644)  # safetensors writes 0600; the server often runs as another user
    logger.info(
        "merged %s at alpha %.2f into %s in %.1f s",
        args.adapter,
        alpha,
        args.output,
        time.perf_counter() - start,
    )

    if not args.no_verify:
        # The contract of a merged file: stock open_clip loads it with strict key matching.
        open_clip.create_model(architecture, pretrained=str(args.output))
        logger.info(
            "verified: open_clip.create_model(%r, pretrained=%r) loads it strictly",
            architecture,
            str(args.output),
        )
    print(args.output)
    return 0
