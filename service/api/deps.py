"""Dependencies shared by the routes: settings, service state, API-key checks."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Path, Request

from ..errors import APIError
from ..settings import Settings
from ..state import ServiceState
from ..tenants import validate_tenant_id


def get_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise APIError(503, "not_ready", "the service is still starting; retry shortly.")
    return state


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


def _keys_match(presented: str, expected: str) -> bool:
    # Hash first so the comparison time depends on neither key's length nor content.
    return hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def require_tenant(
    request: Request,
    settings: SettingsDep,
    tenant: Annotated[str, Path(description="tenant id: a-z, 0-9, '_' and '-'", examples=["acme"])],
) -> str:
    """Validate the tenant id and require that tenant's own API key."""
    validate_tenant_id(tenant)
    request.state.tenant = tenant
    if not settings.require_api_keys:
        return tenant
    presented = _presented_key(request)
    if presented is None:
        raise APIError(
            401,
            "unauthorized",
            "missing API key; send 'Authorization: Bearer <key>' or 'X-API-Key'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = settings.tenant_api_keys.get(tenant)
    # One message for an unknown tenant and a wrong key, so keys cannot be used to probe tenant ids.
    if expected is None or not _keys_match(presented, expected.get_secret_value()):
        raise APIError(
            401,
            "unauthorized",
            f"the API key is not valid for tenant {tenant!r}.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return tenant


def require_admin(request: Request, settings: SettingsDep) -> None:
    """Require the admin API key; admin routes are off when none is configured."""
    if settings.admin_api_key is None:
        raise APIError(
            403, "admin_disabled", "admin routes are disabled; set RADAPTER_ADMIN_API_KEY to enable them."
        )
    presented = _presented_key(request)
    if presented is None or not _keys_match(presented, settings.admin_api_key.get_secret_value()):
        raise APIError(
            401, "unauthorized", "missing or invalid admin API key.", headers={"WWW-Authenticate": "Bearer"}
        )


TenantDep = Annotated[str, Depends(require_tenant)]
AdminDep = Depends(require_admin)
