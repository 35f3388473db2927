"""`radapter serve`: run the multi-tenant inference service with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from .settings import CONFIG_FILE_VARIABLE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML settings file (same as {CONFIG_FILE_VARIABLE}); RADAPTER_* environment variables override it",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from .backbone import require_backbone
    from .main import create_app
    from .settings import Settings

    if args.config is not None:
        os.environ[CONFIG_FILE_VARIABLE] = str(args.config)
    try:
        settings = Settings()
    except ValidationError as error:
        raise ValueError(f"invalid settings: {error}") from error
    require_backbone(settings)
    # The CLI keeps third-party loggers at WARNING; uvicorn's start, stop and access lines are the
    # server's own record, so they stay at INFO.
    logging.getLogger("uvicorn").setLevel(logging.INFO)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None)
    return 0
