"""Loading and chunking overlap with embedding: a bounded producer/consumer pipeline.

A refresh used to load every document, then chunk them all, then embed them all: the embedder sat
idle while files were read and parsed, and every document of a large export was held at once. Here
a producer thread walks the documents (reading files as it goes) and hands each changed document's
chunks to a bounded queue; the calling thread embeds whatever is queued, so the first batch is
embedded while later files are still being read, and at most `queue_documents` chunked documents
wait for the embedder. (The embedded chunks are kept until the refresh commits them as one version.)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, cast

import numpy as np

from knowledge.chunking import Chunk
from knowledge.embeddings import DIMENSIONS, Embedder

QUEUE_DOCUMENTS = 64  # chunked documents waiting for the embedder, at most
GATHER_BATCHES = 4  # texts handed to one encode call, in batches: long enough to sort by length

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def embed_stream(
    groups: Iterator[list[Chunk]],
    embedder: Embedder,
    *,
    progress: Any = None,
    queue_documents: int = QUEUE_DOCUMENTS,
) -> tuple[list[Chunk], np.ndarray]:
    """Every chunk `groups` yields (one list per changed document) and its vector, in order.

    `groups` is drained in a producer thread (it may read files and must not be iterated elsewhere);
    this thread embeds. An error on either side stops both and is raised here."""
    handoff: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_documents))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for group in groups:
                if group and not put(group):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failed(exc))

    producer = threading.Thread(target=produce, name="refresh-loader", daemon=True)
    producer.start()
    chunks: list[Chunk] = []
    vectors: list[np.ndarray] = []
    target = embedder.batch_size * GATHER_BATCHES
    finished = False
    try:
        while not finished:
            batch: list[Chunk] = []
            item = handoff.get()  # wait for work; then take what is ready, up to `target`
            while True:
                if item is _END:
                    finished = True
                    break
                if isinstance(item, _Failed):
                    raise item.error
                batch.extend(cast("list[Chunk]", item))  # neither marker: a document's chunks
                if len(batch) >= target:
                    break
                try:
                    item = handoff.get_nowait()
                except queue.Empty:
                    break
            if batch:
                vectors.append(embedder.encode([chunk.embed_text for chunk in batch], progress=progress))
                chunks.extend(batch)
    finally:
        stop.set()
        producer.join(timeout=None if finished else 5.0)  # after a failure it may be stuck in a read
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, DIMENSIONS), dtype=np.float32)
    return chunks, matrix
