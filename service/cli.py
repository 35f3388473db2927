"""`radapter serve`: run the multi-tenant inference service with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from .settings import CONFIG_FILE_VARIABLE

if TYPE_CHECKING:
    from .demo import DemoSetup, DemoTenant

# Reads one key from the demo keys file, so the printed commands run without showing the key.
READ_KEY = "python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[\"tenants\"][sys.argv[2]])'"


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
        raise ValueError(describe_settings_error(error)) from error
    require_backbone(settings)
    app = create_app(settings)
    if app.state.demo is not None:
        print(demo_instructions(app.state.demo, _client_url(args.host, args.port)), flush=True)
    # The CLI keeps third-party loggers at WARNING; uvicorn's start, stop and access lines are the
    # server's own record, so they stay at INFO.
    logging.getLogger("uvicorn").setLevel(logging.INFO)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None)
    return 0


def demo_instructions(demo: DemoSetup, base_url: str) -> str:
    """Describe the demo tenants with one runnable curl command each (stdout text, not a log line)."""
    from .demo import SAMPLE_IMAGE, write_sample_image

    lines = [
        f"Demo mode: {len(demo.tenants)} demo tenants, adapter store {demo.settings.adapter_store}.",
        f"Admin and demo tenant API keys: {demo.keys_file} (mode 0600).",
    ]
    if not demo.tenants:
        return "\n".join(lines)
    sample = write_sample_image(demo.settings.adapter_store / SAMPLE_IMAGE)
    lines.append("Try, once the server is up:")
    for tenant in demo.tenants:
        lines.append("  " + demo_curl(tenant, demo.keys_file, sample, base_url))
    return "\n".join(lines)


def demo_curl(tenant: DemoTenant, keys_file: Path, image: Path, base_url: str) -> str:
    """Build a curl command that calls the route matching the tenant adapter's task."""
    labels = tenant.metadata.labels[:4]
    texts: list[str] = []  # sent with --form-string, so a leading @ or < is never read as a file
    if tenant.metadata.task == "classification":
        route, file_field = "classify", "images"
    elif tenant.metadata.task == "retrieval":
        route, file_field = "retrieve", "query_image"
        captions = labels or ["an emoji of a red apple", "an emoji of a blue car"]
        texts = [f"candidate_texts={caption}" for caption in captions]
    elif tenant.metadata.task == "segmentation":
        route, file_field = "segment", "image"
        texts = [f"classes={name}" for name in labels or ["apple", "background"]]
    else:
        route, file_field = "embed", "images"
    key = f"$({READ_KEY} {shlex.quote(str(keys_file))} {tenant.name})"
    parts = ["curl", "-s", "-H", f'"Authorization: Bearer {key}"']
    parts += ["-F", shlex.quote(f"{file_field}=@{image}")]
    for value in texts:
        parts += ["--form-string", shlex.quote(value)]
    parts.append(f"{base_url}/v1/tenants/{tenant.name}/{route}")
    return " ".join(parts)


def describe_settings_error(error: ValidationError) -> str:
    """List each invalid setting by its environment variable, without the values.

    pydantic's own rendering quotes the input, which for settings means API keys.
    """
    lines = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        field = ".".join(str(part) for part in item["loc"]) or "settings"
        variable = f"RADAPTER_{field.split('.')[0].upper()}"
        lines.append(f"{variable}: {item['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def _client_url(host: str, port: int) -> str:
    """Return the URL a client on this machine uses for a server bound to `host`."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
