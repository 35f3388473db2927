"""Tenant and adapter version identifiers: the only names that become paths in the adapter store."""

from __future__ import annotations

import re

from .errors import APIError

# Lower-case start and no dots or slashes, so an id can never be `..`, absolute, or a hidden file.
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Versions may contain dots (v1.2) but must start with a letter or digit, so `.` and `..` fail.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED_VERSIONS = {"ACTIVE"}


def validate_tenant_id(tenant: str) -> str:
    """Return `tenant` unchanged, or raise a 400 error naming the rule it breaks."""
    if not TENANT_PATTERN.fullmatch(tenant):
        raise APIError(
            400,
            "invalid_tenant",
            f"tenant id {tenant[:80]!r} is invalid; use 1-63 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit.",
        )
    return tenant


def validate_version_id(version: str) -> str:
    """Return `version` unchanged, or raise a 400 error naming the rule it breaks."""
    if not VERSION_PATTERN.fullmatch(version) or version in RESERVED_VERSIONS:
        raise APIError(
            400,
            "invalid_version",
            f"adapter version {version[:80]!r} is invalid; use 1-64 characters of A-Z, a-z, 0-9, '.', '_' "
            "and '-', starting with a letter or digit (not 'ACTIVE').",
        )
    return version
