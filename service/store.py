"""The adapter store on disk: `<root>/<tenant>/<version>/` adapter directories and `<tenant>/ACTIVE` pointers.

The ACTIVE file holds one version id and is replaced atomically, so several replicas sharing the
store read either the old or the new pointer, never a partial one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from .errors import APIError
from .tenants import TENANT_PATTERN, VERSION_PATTERN, validate_tenant_id, validate_version_id

ACTIVE_FILE = "ACTIVE"


class AdapterStore:
    """File operations on the store; ids are validated before they become paths."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def tenant_dir(self, tenant: str) -> Path:
        return self.root / validate_tenant_id(tenant)

    def version_dir(self, tenant: str, version: str) -> Path:
        return self.tenant_dir(tenant) / validate_version_id(version)

    def tenants(self) -> list[str]:
        """List tenant ids that have a directory in the store."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and TENANT_PATTERN.fullmatch(p.name))

    def versions(self, tenant: str) -> list[str]:
        """List a tenant's stored versions, oldest first by directory modification time."""
        directory = self.tenant_dir(tenant)
        if not directory.is_dir():
            return []
        found = [p for p in directory.iterdir() if p.is_dir() and VERSION_PATTERN.fullmatch(p.name)]
        return [p.name for p in sorted(found, key=lambda p: (p.stat().st_mtime, p.name))]

    def read_active(self, tenant: str) -> str | None:
        """Return the version the tenant's ACTIVE file points to, or None when there is none."""
        path = self.tenant_dir(tenant) / ACTIVE_FILE
        try:
            version = path.read_text().strip()
        except FileNotFoundError:
            return None
        return validate_version_id(version)

    def write_active(self, tenant: str, version: str) -> None:
        """Point the tenant at `version` by atomically replacing its ACTIVE file."""
        directory = self.tenant_dir(tenant)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".ACTIVE.")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(validate_version_id(version) + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, directory / ACTIVE_FILE)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def clear_active(self, tenant: str) -> None:
        (self.tenant_dir(tenant) / ACTIVE_FILE).unlink(missing_ok=True)

    def staging_dir(self, tenant: str) -> Path:
        """Create a hidden directory for an upload that becomes a version only after validation."""
        directory = self.tenant_dir(tenant) / f".incoming-{uuid.uuid4().hex}"
        directory.mkdir(parents=True)
        return directory

    def commit_version(self, tenant: str, version: str, staging: Path) -> Path:
        """Move a validated staging directory into place as `version`; an existing version is a 409."""
        target = self.version_dir(tenant, version)
        if target.exists():
            raise APIError(
                409,
                "version_exists",
                f"tenant {tenant!r} already has version {version!r}; choose a new version id or delete it first.",
            )
        os.rename(staging, target)
        return target

    def delete_version(self, tenant: str, version: str) -> None:
        target = self.version_dir(tenant, version)
        if not target.is_dir():
            raise APIError(404, "version_not_found", f"tenant {tenant!r} has no version {version!r}.")
        shutil.rmtree(target)

    def delete_tenant(self, tenant: str) -> None:
        shutil.rmtree(self.tenant_dir(tenant), ignore_errors=True)
