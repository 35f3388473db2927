"""ONNX Runtime engine: one merged export per tenant variant, cached on disk and reused across restarts.

Unlike the PyTorch engine, a variant here is a full model: the overlay is merged into a copy of the
backbone, the copy is exported with `training.export_onnx.export_encoders`, and each encoder gets its
own `InferenceSession` holding its own weights. Exports live under
`<onnx_cache_dir>/<base sha256>/<tenant>/<version>-<adapter sha256[:16]>-alpha<alpha>/`, so a restart,
or another replica sharing the directory, loads them instead of exporting again.

Segmentation runs through PyTorch: the exported graphs end at the pooled, projected embedding and have
no patch-token output. A third, dense graph per variant would hold one more copy of the vision tower's
weights for every tenant, for a route that encodes one image per request. The PyTorch path instead
applies the same merged overlay to the backbone already in memory with `functional_call`, which costs
only the overlay tensors and gives exactly the torch engine's segmentation.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch import nn

from training.export_onnx import IMAGE_FILE, TEXT_FILE, export_encoders

from ..backbone import Backbone
from ..settings import Settings
from . import VariantSpec
from .torch_backend import TorchBackend

logger = logging.getLogger(__name__)

EXPORT_INFO_FILE = "export.json"  # written last; an export directory without it is incomplete
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass(eq=False)
class OnnxHandle:
    """One variant's sessions, the overlay for the PyTorch dense path, and the export they came from."""

    directory: Path
    image: ort.InferenceSession  # pixel_values (B, 3, H, W) -> image_embeddings (B, D)
    text: ort.InferenceSession  # input_ids (B, context_length) -> text_embeddings (B, D)
    dense_overlay: dict[str, torch.Tensor]
    nbytes: int


def session_providers(device: str, available: list[str]) -> list:
    """Choose ONNX Runtime providers for a torch device string: CUDA first when asked for and available."""
    if not device.startswith("cuda"):
        return [CPU_PROVIDER]
    if CUDA_PROVIDER not in available:
        logger.warning(
            "RADAPTER_DEVICE=%s but this onnxruntime build has no %s (available: %s); running on CPU. "
            "Install onnxruntime-gpu to use the GPU.",
            device,
            CUDA_PROVIDER,
            available,
        )
        return [CPU_PROVIDER]
    device_id = int(device.split(":", 1)[1]) if ":" in device else 0
    return [(CUDA_PROVIDER, {"device_id": device_id}), CPU_PROVIDER]


def probe_provider(providers: list) -> str:
    """Create a one-node session and return the provider ONNX Runtime actually selected.

    onnxruntime falls back to CPU when the CUDA provider cannot load its libraries, and only the
    session's `get_providers()` shows that, so this reads it from a real session.
    """
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "provider_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    # IR version 9 and opset 18 load in every onnxruntime release the project supports (>= 1.18).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=providers)
    return session.get_providers()[0]


def merged_model(model: nn.Module, overlay: dict[str, torch.Tensor]) -> nn.Module:
    """Return a float32 CPU copy of `model` with the overlay's merged tensors loaded into it."""
    merged = copy.deepcopy(model).to("cpu", torch.float32)
    _, unexpected = merged.load_state_dict(overlay, strict=False)
    if unexpected:
        raise ValueError(f"the overlay has tensors the backbone does not: {unexpected[:5]}")
    return merged.eval()


class OnnxBackend:
    """Serves each tenant variant from its own merged ONNX export through onnxruntime sessions."""

    name = "onnxruntime"
    prepare_on_engine_thread = False  # an export takes seconds; other tenants keep being served

    def __init__(self, backbone: Backbone, settings: Settings) -> None:
        self.backbone = backbone
        self.cache_dir = settings.onnx_dir / backbone.sha256
        self.providers = session_providers(settings.device, ort.get_available_providers())
        self.provider = probe_provider(self.providers)
        self.dense = TorchBackend(backbone)
        self.exports = 0  # exports run by this process, as opposed to ones loaded from the cache
        # torch.export traces with process-wide state, so two variants are never exported at once.
        self._export_lock = threading.Lock()
        logger.info(
            "onnxruntime %s: provider %s (requested %s), exports in %s",
            ort.__version__,
            self.provider,
            [p if isinstance(p, str) else p[0] for p in self.providers],
            self.cache_dir,
        )

    def export_dir(self, spec: VariantSpec) -> Path:
        """Return the cache directory of a variant's export."""
        # NOTE: nothing removes exports. Deleted versions and one-off alphas stay on disk until an
        # operator deletes their directories, which is safe while no replica is starting.
        name = f"{spec.version}-{spec.adapter_sha256[:16]}-alpha{spec.alpha!r}"
        return self.cache_dir / spec.tenant / name

    def prepare(self, spec: VariantSpec, overlay: dict[str, torch.Tensor]) -> OnnxHandle:
        """Load the variant's export from the cache, exporting it first when it is missing."""
        directory = self.export_dir(spec)
        if self._is_complete(directory, spec):
            logger.info("reusing ONNX export of %s from %s", spec, directory)
        else:
            self._export(spec, overlay, directory)
        image = self._session(directory / IMAGE_FILE)
        text = self._session(directory / TEXT_FILE)
        dense_overlay = self.dense.prepare(spec, overlay) if self.backbone.supports_dense() else {}
        # NOTE: an estimate. A CPU session keeps about one copy of the initializers stored in its file.
        # Arena buffers for activations come on top and grow with the batch size.
        nbytes = (directory / IMAGE_FILE).stat().st_size + (directory / TEXT_FILE).stat().st_size
        nbytes += self.dense.handle_nbytes(dense_overlay)
        return OnnxHandle(directory, image, text, dense_overlay, nbytes)

    def _is_complete(self, directory: Path, spec: VariantSpec) -> bool:
        info_path = directory / EXPORT_INFO_FILE
        if not info_path.is_file():
            return False
        info = json.loads(info_path.read_text())
        expected = self._export_info(spec)
        if {key: info.get(key) for key in expected} != expected:
            # The directory name carries only 16 hex digits of the adapter hash; the info file has all.
            logger.warning(
                "ONNX export %s does not match %s (it records %s); exporting again", directory, spec, info
            )
            return False
        return (directory / IMAGE_FILE).is_file() and (directory / TEXT_FILE).is_file()

    def _export_info(self, spec: VariantSpec) -> dict:
        return {
            "base_sha256": self.backbone.sha256,
            "adapter_sha256": spec.adapter_sha256,
            "tenant": spec.tenant,
            "version": spec.version,
            "alpha": spec.alpha,
        }

    def _export(self, spec: VariantSpec, overlay: dict[str, torch.Tensor], directory: Path) -> None:
        # Export into a private directory and rename it into place, so a crash never leaves a partial
        # export behind and two replicas exporting the same variant do not mix their files.
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.parent / f".staging-{directory.name}-{uuid.uuid4().hex}"
        started = time.perf_counter()
        try:
            model = merged_model(self.backbone.model, overlay)
            with self._export_lock:
                export_encoders(model, staging)
                self.exports += 1
            del model
            info = {**self._export_info(spec), "torch": torch.__version__}
            (staging / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
            self._move_into_place(spec, staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("exported %s to %s in %.1f s", spec, directory, time.perf_counter() - started)

    def _move_into_place(self, spec: VariantSpec, staging: Path, directory: Path) -> None:
        try:
            os.rename(staging, directory)
            return
        except OSError:
            if self._is_complete(directory, spec):
                logger.info("another process exported %s first; using its files", spec)
                return
        # A stale or partial directory is in the way: move it aside first, because a rename cannot
        # replace a non-empty directory. Sessions already open on its files keep working on Linux.
        stale = directory.parent / f".stale-{directory.name}-{uuid.uuid4().hex}"
        os.rename(directory, stale)
        shutil.rmtree(stale, ignore_errors=True)
        os.rename(staging, directory)

    def _session(self, path: Path) -> ort.InferenceSession:
        session = ort.InferenceSession(str(path), providers=self.providers)
        used = session.get_providers()[0]
        if used != self.provider:
            logger.warning("session %s runs on %s, not %s as probed at start", path, used, self.provider)
            self.provider = used
        return session

    def discard(self, handle: OnnxHandle) -> None:
        """Delete the variant's export directory; open sessions keep their weights in memory."""
        shutil.rmtree(handle.directory, ignore_errors=True)
        logger.info("deleted ONNX export %s", handle.directory)

    def handle_nbytes(self, handle: OnnxHandle) -> int:
        return handle.nbytes

    def encode_image(self, handle: OnnxHandle, pixels: torch.Tensor) -> torch.Tensor:
        array = pixels.to(torch.float32).contiguous().numpy()
        (embeddings,) = handle.image.run(None, {"pixel_values": array})
        return torch.from_numpy(embeddings)

    def encode_text(self, handle: OnnxHandle, ids: torch.Tensor) -> torch.Tensor:
        array = ids.to(torch.int64).contiguous().numpy()
        (embeddings,) = handle.text.run(None, {"input_ids": array})
        return torch.from_numpy(embeddings)

    def encode_dense(self, handle: OnnxHandle, pixels: torch.Tensor) -> torch.Tensor:
        return self.dense.encode_dense(handle.dense_overlay, pixels)
