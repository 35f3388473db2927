"""Per-tenant retrieval galleries on disk, with embeddings tied to one adapter version and alpha.

Layout under `<store>/<tenant>/_gallery/`: `items.json` (ids, kinds, texts, metadata), `images/<id>`
(the uploaded bytes, kept so a new adapter version can re-embed them), and
`embeddings/<version>@<alpha>.safetensors`. A query reads only the file of the version and alpha that
serve it; after a swap that file does not exist yet and the gallery is re-embedded, so embeddings of
two versions are never compared with each other.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import APIError
from .store import AdapterStore

GALLERY_DIR = "_gallery"


class GalleryStore:
    """Read and write galleries; one lock per tenant serialises writers within this process."""

    def __init__(self, store: AdapterStore) -> None:
        self.store = store
        self._locks: dict[str, threading.Lock] = {}

    def _dir(self, tenant: str) -> Path:
        return self.store.tenant_dir(tenant) / GALLERY_DIR

    def _lock(self, tenant: str) -> threading.Lock:
        return self._locks.setdefault(tenant, threading.Lock())

    def items(self, tenant: str) -> list[dict[str, Any]]:
        """Return the gallery's items in insertion order."""
        path = self._dir(tenant) / "items.json"
        if not path.is_file():
            return []
        return json.loads(path.read_text())

    def image_bytes(self, tenant: str, item_id: str) -> bytes:
        return (self._dir(tenant) / "images" / item_id).read_bytes()

    def add(
        self, tenant: str, items: list[dict[str, Any]], images: dict[str, bytes], max_items: int
    ) -> list[str]:
        """Append items (ids must be new) and drop cached embeddings, which no longer cover the gallery."""
        with self._lock(tenant):
            current = self.items(tenant)
            known = {item["id"] for item in current}
            for item in items:
                item["id"] = item.get("id") or uuid.uuid4().hex
                if item["id"] in known:
                    raise APIError(
                        409, "item_exists", f"gallery item {item['id']!r} already exists; delete it first."
                    )
                known.add(item["id"])
            if len(current) + len(items) > max_items:
                raise APIError(
                    413,
                    "gallery_full",
                    f"the gallery would exceed {max_items} items (RADAPTER_MAX_GALLERY_ITEMS).",
                )
            image_dir = self._dir(tenant) / "images"
            image_dir.mkdir(parents=True, exist_ok=True)
            for item in items:
                if item["id"] in images:
                    _atomic_write(image_dir / item["id"], images[item["id"]])
            self._write_items(tenant, current + items)
            return [item["id"] for item in items]

    def delete(self, tenant: str, item_id: str) -> None:
        with self._lock(tenant):
            current = self.items(tenant)
            remaining = [item for item in current if item["id"] != item_id]
            if len(remaining) == len(current):
                raise APIError(
                    404, "item_not_found", f"gallery of tenant {tenant!r} has no item {item_id!r}."
                )
            self._write_items(tenant, remaining)
            (self._dir(tenant) / "images" / item_id).unlink(missing_ok=True)

    def load_embeddings(self, tenant: str, version: str, alpha: float, ids: list[str]) -> torch.Tensor | None:
        """Return stored embeddings for exactly these ids under this version and alpha, else None."""
        path = self._embedding_path(tenant, version, alpha)
        if not path.is_file():
            return None
        tensors = load_file(str(path))
        stored_ids = json.loads(bytes(tensors["ids"].tolist()).decode())
        return tensors["embeddings"] if stored_ids == ids else None

    def save_embeddings(
        self, tenant: str, version: str, alpha: float, ids: list[str], embeddings: torch.Tensor
    ) -> None:
        path = self._embedding_path(tenant, version, alpha)
        path.parent.mkdir(parents=True, exist_ok=True)
        id_bytes = torch.tensor(list(json.dumps(ids).encode()), dtype=torch.uint8)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".emb.")
        os.close(handle)
        save_file({"embeddings": embeddings.contiguous(), "ids": id_bytes}, temporary)
        os.replace(temporary, path)

    def _embedding_path(self, tenant: str, version: str, alpha: float) -> Path:
        return self._dir(tenant) / "embeddings" / f"{version}@{alpha:.6f}.safetensors"

    def _write_items(self, tenant: str, items: list[dict[str, Any]]) -> None:
        self._dir(tenant).mkdir(parents=True, exist_ok=True)
        _atomic_write(self._dir(tenant) / "items.json", json.dumps(items).encode())
        embeddings = self._dir(tenant) / "embeddings"
        if embeddings.is_dir():
            for path in embeddings.iterdir():
                path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.replace(temporary, path)
