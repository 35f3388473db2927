"""Admin routes: upload, activate, inspect and delete tenant adapter versions (hot-swap)."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from ...errors import ERROR_RESPONSES, APIError
from ...tenants import validate_tenant_id, validate_version_id
from ..deps import AdminDep, StateDep
from ..schemas import ActivateRequest, AdapterVersionInfo, TenantAdapterInfo, TenantList

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminDep], responses=ERROR_RESPONSES)

WEIGHTS_NAME = "adapter.safetensors"
METADATA_NAME = "adapter.json"


def _info(state, tenant: str) -> TenantAdapterInfo:
    active = state.registry.tenants().get(tenant)
    versions = state.store.versions(tenant)
    info = TenantAdapterInfo(
        tenant=tenant,
        active_version=active.version if active else None,
        versions=[
            AdapterVersionInfo(version=v, active=active is not None and v == active.version) for v in versions
        ],
    )
    if active is not None:
        info.default_alpha = active.default_alpha
        info.task = active.metadata.task
        info.labels = list(active.metadata.labels)
        info.base_architecture = active.metadata.base_architecture
    return info


@router.get("/tenants", response_model=TenantList)
async def list_tenants(state: StateDep) -> TenantList:
    """List every tenant in the adapter store with its versions and the version being served."""
    return TenantList(tenants=[_info(state, tenant) for tenant in state.store.tenants()])


@router.get("/tenants/{tenant}/adapter", response_model=TenantAdapterInfo)
async def get_adapter(tenant: str, state: StateDep) -> TenantAdapterInfo:
    """Show the tenant's served version, its default alpha and labels, and all stored versions."""
    validate_tenant_id(tenant)
    if not state.store.tenant_dir(tenant).is_dir():
        raise APIError(404, "tenant_not_found", f"tenant {tenant!r} is not in the adapter store.")
    return _info(state, tenant)


@router.put("/tenants/{tenant}/adapter", response_model=TenantAdapterInfo, status_code=201)
async def put_adapter(
    tenant: str,
    state: StateDep,
    weights: Annotated[UploadFile, File(description=f"the adapter's {WEIGHTS_NAME}")],
    metadata: Annotated[UploadFile, File(description=f"the adapter's {METADATA_NAME}")],
    version: Annotated[str | None, Form(description="new version id; default: a UTC timestamp")] = None,
    activate: Annotated[bool, Form(description="serve the new version at once (hot-swap)")] = True,
) -> TenantAdapterInfo:
    """Upload a new adapter version and, by default, switch the tenant to it.

    The upload is validated (safetensors only, names, shapes vs ranks, finite values, base weights
    hash) in a staging directory first; a rejected upload changes nothing and the previous version
    keeps serving. Requests in flight finish on the version they started with.

    Example: `curl -X PUT -H "Authorization: Bearer $ADMIN_KEY" -F weights=@adapter.safetensors
    -F metadata=@adapter.json -F version=v2 .../v1/admin/tenants/acme/adapter`
    """
    validate_tenant_id(tenant)
    version = validate_version_id(version or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    staging = state.store.staging_dir(tenant)
    try:
        (staging / WEIGHTS_NAME).write_bytes(await weights.read())
        (staging / METADATA_NAME).write_bytes(await metadata.read())
        part_names = {WEIGHTS_NAME: "weights", METADATA_NAME: "metadata"}
        adapter = await asyncio.to_thread(state.registry.load_directory, tenant, version, staging, part_names)
        state.store.commit_version(tenant, version, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if activate:
        await state.registry.activate(tenant, version, preloaded=adapter)
    return _info(state, tenant)


@router.put("/tenants/{tenant}/adapter/active", response_model=TenantAdapterInfo)
async def activate_version(tenant: str, body: ActivateRequest, state: StateDep) -> TenantAdapterInfo:
    """Serve a version already in the store (roll forward or back); validated like an upload.

    Example body: `{"version": "v1"}`.
    """
    validate_tenant_id(tenant)
    version = validate_version_id(body.version)
    if not state.store.version_dir(tenant, version).is_dir():
        raise APIError(
            404, "version_not_found", f"tenant {tenant!r} has no version {version!r} in the store."
        )
    await state.registry.activate(tenant, version)
    return _info(state, tenant)


@router.delete("/tenants/{tenant}/adapter", status_code=204)
async def delete_adapter(
    tenant: str,
    state: StateDep,
    purge: Annotated[bool, Query(description="also delete every stored version and the gallery")] = False,
) -> Response:
    """Stop serving the tenant; with `purge=true` also delete its versions and gallery from the store."""
    validate_tenant_id(tenant)
    if not state.store.tenant_dir(tenant).is_dir():
        raise APIError(404, "tenant_not_found", f"tenant {tenant!r} is not in the adapter store.")
    await state.registry.deactivate(tenant)
    if purge:
        await asyncio.to_thread(state.store.delete_tenant, tenant)
    return Response(status_code=204)


@router.delete("/tenants/{tenant}/adapter/versions/{version}", status_code=204)
async def delete_version(tenant: str, version: str, state: StateDep) -> Response:
    """Delete a stored version that is not being served."""
    validate_tenant_id(tenant)
    validate_version_id(version)
    active = state.registry.tenants().get(tenant)
    if (active is not None and active.version == version) or state.store.read_active(tenant) == version:
        raise APIError(409, "version_active", f"version {version!r} is active; activate another one first.")
    await asyncio.to_thread(state.store.delete_version, tenant, version)
    return Response(status_code=204)
