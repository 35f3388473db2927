"""The `radapter` console command: one subcommand per pipeline step."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Subcommand name -> module that defines `add_arguments(parser)` and `run(args) -> int`.
# Modules are imported only when their subcommand runs, so `radapter --help` stays fast.
COMMANDS = {
    "serve": ("service.cli", "run the multi-tenant inference service"),
    "train": ("training.train", "fine-tune an open_clip model with R-Adapter or a baseline method"),
    "evaluate": ("training.evaluate", "measure ID and OOD accuracy or recall, with optional alpha sweeps"),
    "merge": ("training.merge", "fold an adapter into its base model and write plain open_clip weights"),
    "export-onnx": ("training.export_onnx", "export image and text encoders to ONNX with a parity report"),
    "data": ("training.data.cli", "build the emoji renditions benchmark"),
    "compare": ("training.compare", "run every method side by side and write docs/RESULTS.md"),
    "pretrain": (
        "training.pretrain",
        "pretrain the embedded CLIP backbone on the benchmark's pretrain split",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radapter", description="R-Adapter fine-tuning and serving for open_clip."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = build_parser()
    known, rest = top.parse_known_args(argv)
    module_name, help_text = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"radapter {known.command}", description=help_text)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    verbose = known.verbose or args.verbose
    # Only this project's loggers speak at INFO: open_clip and the ONNX exporter log every step of
    # their work at INFO, which would bury the command's own output.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for package in ("training", "service"):
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        from training import embedded  # these import torch, so not at the top
        from training.models import register_model_config_dirs

        embedded.register()  # the project's own default backbone is always a known architecture
        register_model_config_dirs(os.environ.get("RADAPTER_MODEL_CONFIG_DIRS"))
        return module.run(args)
    except (ValueError, OSError) as error:
        # Input and file-system errors carry their own explanation (the value, the path); a traceback
        # would only hide it.
        print(f"radapter {known.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"radapter {known.command}: interrupted; rerun the same command to resume where it can "
            "(training resumes from its last checkpoint)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
