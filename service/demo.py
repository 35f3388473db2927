"""Demo defaults: seed the adapter store with the shipped demo tenants and give them API keys.

Demo mode is on by default when the service runs the embedded backbone, because the shipped demo
adapters were trained on exactly those weights. At start, every demo tenant that the store lacks is
copied in with its shipped version active, and keys that the settings do not configure are
generated once and kept in `<store>/demo-keys.json` (mode 0600), so restarts reuse them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw
from pydantic import SecretStr

from training.radapter.checkpoint import METADATA_NAME, WEIGHTS_NAME, AdapterMetadata

from .errors import APIError
from .settings import Settings, check_key_strength
from .store import ACTIVE_FILE, AdapterStore
from .tenants import validate_tenant_id, validate_version_id

logger = logging.getLogger(__name__)

KEYS_FILE = "demo-keys.json"
SAMPLE_IMAGE = "demo-sample.png"


@dataclass(frozen=True)
class DemoTenant:
    """One shipped demo tenant: its source folder, versions and the version to serve."""

    name: str
    source: Path
    versions: list[str]
    active: str
    metadata: AdapterMetadata


@dataclass
class DemoKeys:
    """Contents of the keys file: the generated admin key and tenant keys."""

    admin: str | None = None
    tenants: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoSetup:
    """Result of `prepare_demo`: settings with the demo keys filled in, and the keys file."""

    settings: Settings
    tenants: list[DemoTenant]
    seeded: list[str]
    keys_file: Path


def prepare_demo(settings: Settings) -> DemoSetup | None:
    """Seed missing demo tenants and fill in unconfigured keys; None when demo mode is off.

    Safe to call again on the same store: present tenants are never overwritten and stored keys are
    reused. Keys set in the settings always win over generated ones.
    """
    if not settings.demo_mode:
        return None
    tenants = find_demo_tenants(settings.demo_tenants_dir, required=settings.demo_tenants is True)
    store = AdapterStore(settings.adapter_store)
    seeded = [tenant.name for tenant in tenants if seed_tenant(store, tenant)]

    keys_file = store.root / KEYS_FILE
    unkeyed = [tenant.name for tenant in tenants if tenant.name not in settings.tenant_api_keys]
    keys = ensure_keys(keys_file, admin=settings.admin_api_key is None, tenants=unkeyed)
    tenant_keys = {name: SecretStr(keys.tenants[name]) for name in unkeyed}
    tenant_keys.update(settings.tenant_api_keys)
    update: dict[str, object] = {"tenant_api_keys": tenant_keys}
    if settings.admin_api_key is None:
        update["admin_api_key"] = SecretStr(keys.admin)
    logger.info(
        "demo mode: %d demo tenants (%d seeded now) from %s, keys in %s",
        len(tenants),
        len(seeded),
        settings.demo_tenants_dir,
        keys_file,
    )
    return DemoSetup(settings.model_copy(update=update), tenants, seeded, keys_file)


def find_demo_tenants(directory: Path, *, required: bool) -> list[DemoTenant]:
    """Read `<directory>/<tenant>/<version>/` demo adapters, sorted by tenant id.

    A missing or empty directory raises when demo mode was requested explicitly and is logged
    otherwise, so a checkout without the demo adapters still serves the backbone.
    """
    found = []
    if directory.is_dir():
        for source in sorted(directory.iterdir()):
            if source.is_dir() and not source.name.startswith((".", "_")):
                found.append(_read_demo_tenant(source))
    if not found:
        message = (
            f"no demo tenants in {directory}: expected <tenant>/<version>/ folders holding "
            f"{WEIGHTS_NAME} and {METADATA_NAME}"
        )
        if required:
            raise FileNotFoundError(
                f"RADAPTER_DEMO_TENANTS is on but there are {message}. Point RADAPTER_DEMO_TENANTS_DIR "
                "at such a folder, or set RADAPTER_DEMO_TENANTS=false."
            )
        logger.warning("%s; serving without demo tenants", message)
    return found


def _read_demo_tenant(source: Path) -> DemoTenant:
    try:
        name = validate_tenant_id(source.name)
    except APIError as error:
        raise ValueError(f"demo tenant folder {source}: {error.message}") from None
    versions = []
    for path in sorted(source.iterdir()):
        if not path.is_dir() or path.name.startswith((".", "_")):
            continue
        try:
            versions.append(validate_version_id(path.name))
        except APIError as error:
            raise ValueError(f"demo adapter folder {path}: {error.message}") from None
        for file in (WEIGHTS_NAME, METADATA_NAME):
            if not (path / file).is_file():
                raise FileNotFoundError(f"demo adapter {path} has no {file}; ship both adapter files.")
    if not versions:
        raise FileNotFoundError(f"demo tenant {source} has no <version>/ adapter folder.")
    active = _shipped_version(source, versions)
    metadata_path = source / active / METADATA_NAME
    try:
        metadata = AdapterMetadata.from_dict(json.loads(metadata_path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{metadata_path} is not a valid adapter description: {error}") from error
    return DemoTenant(name, source, versions, active, metadata)


def _shipped_version(source: Path, versions: list[str]) -> str:
    """Return the version named by `<source>/ACTIVE`, or the only version when there is no such file."""
    pointer = source / ACTIVE_FILE
    if not pointer.is_file():
        if len(versions) > 1:
            raise ValueError(
                f"demo tenant {source} has versions {versions} but no {ACTIVE_FILE} file; write the "
                f"version to serve into {pointer}."
            )
        return versions[0]
    active = pointer.read_text().strip()
    if active not in versions:
        raise ValueError(f"{pointer} names version {active!r}, but {source} has only {versions}.")
    return active


def seed_tenant(store: AdapterStore, tenant: DemoTenant) -> bool:
    """Copy a demo tenant into the store unless the store already has it; return whether it copied.

    The copy is built in a hidden staging folder and renamed into place, so replicas starting
    together on a shared store never see a half-copied tenant, and only one copy wins.
    """
    target = store.tenant_dir(tenant.name)
    if target.exists():
        return False
    staging = store.root / f".seed-{tenant.name}-{uuid.uuid4().hex}"
    try:
        staging.mkdir()
        for version in tenant.versions:
            shutil.copytree(tenant.source / version, staging / version)
        (staging / ACTIVE_FILE).write_text(tenant.active + "\n")
        try:
            os.rename(staging, target)
        except OSError:
            if target.exists():  # another replica seeded it between the check and the rename
                return False
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("seeded demo tenant %s: versions %s, active %s", tenant.name, tenant.versions, tenant.active)
    return True


def ensure_keys(path: Path, *, admin: bool, tenants: list[str]) -> DemoKeys:
    """Return the stored keys after generating any missing admin or tenant key into `path`.

    An exclusive lock on a sibling file makes the read-generate-write step atomic across processes,
    so replicas sharing a store agree on one set of keys.
    """
    lock_path = path.with_name(f".{path.name}.lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        keys = _read_keys(path) if path.exists() else DemoKeys()
        changed = False
        if admin and keys.admin is None:
            keys.admin = secrets.token_urlsafe(32)
            changed = True
        for tenant in tenants:
            if tenant not in keys.tenants:
                keys.tenants[tenant] = secrets.token_urlsafe(32)
                changed = True
        if changed:
            _write_keys(path, keys)
            logger.info("wrote generated demo keys to %s", path)
    return keys


def _read_keys(path: Path) -> DemoKeys:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        logger.warning("%s was readable by others (mode %o); restricted it to 0600", path, mode)
    remedy = "fix it, or delete it to generate new demo keys"
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {remedy}.") from error
    admin = data.get("admin") if isinstance(data, dict) else None
    tenants = data.get("tenants", {}) if isinstance(data, dict) else None
    valid_tenants = isinstance(tenants, dict) and all(isinstance(v, str) for v in tenants.values())
    if not valid_tenants or not isinstance(admin, (str, type(None))):
        raise ValueError(
            f'{path} is invalid: expected {{"admin": "<key>", "tenants": {{"<tenant>": "<key>"}}}}; {remedy}.'
        )
    named = {"admin": admin} if admin is not None else {}
    named.update({f"tenants[{tenant!r}]": key for tenant, key in tenants.items()})
    for name, key in named.items():
        try:
            check_key_strength(f"{path} {name}", SecretStr(key))
        except ValueError as error:
            raise ValueError(f"{error} Or {remedy}.") from None
    return DemoKeys(admin, dict(tenants))


def _write_keys(path: Path, keys: DemoKeys) -> None:
    # mkstemp creates the file with mode 0600, so the keys are never readable by others, not even
    # briefly. The rename then replaces any older file atomically.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump({"admin": keys.admin, "tenants": keys.tenants}, file, indent=2, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_sample_image(path: Path) -> Path:
    """Draw a 64 px red apple on white at `path`, an input for the printed example requests."""
    if path.is_file():
        return path
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((12, 16, 52, 58), fill=(210, 30, 40))
    draw.rectangle((31, 6, 33, 18), fill=(110, 70, 30))
    draw.ellipse((34, 6, 48, 14), fill=(60, 160, 60))
    image.save(path, format="PNG")
    return path
