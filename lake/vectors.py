"""Embedding service: never embed the same text twice; batch whatever is waiting.

A text is looked up by ``task_hash`` (the hash of its normalized form, see
``records.normalize_task``) in three places, in order:

1. an in-memory LRU (``LRU_SIZE`` vectors);
2. the persisted cache, the ``_embeddings`` table keyed by ``(model_id, text_hash)``;
3. the model, in micro-batches: one worker thread takes every text waiting (up to
   ``BATCH``) and embeds them in one forward pass, so concurrent callers share a batch and
   throughput follows the model's batched rate rather than its single-text latency.

New vectors are written to ``_embeddings`` (by ``persist``; lookups of query texts are not
persisted). The normalized text is what gets embedded: the model is uncased, so
normalizing loses nothing and lets equal texts share one vector.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
import pyarrow as pa

from .embedder import Embedder
from .records import normalize_task, task_hash
from .schema import EMBEDDINGS
from .tables import TableStore, quote

LRU_SIZE = 50_000
BATCH = 64


class VectorCache:
    """In-memory LRU in front of the ``_embeddings`` table, for one model."""

    def __init__(self, store: TableStore, model_id: str, dim: int):
        self.store, self.model_id, self.dim = store, model_id, dim
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, hashes: Sequence[str], *, persisted: bool = True) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for h in hashes:
                v = self._lru.get(h)
                if v is not None:
                    self._lru.move_to_end(h)
                    found[h] = v
        missing = [h for h in dict.fromkeys(hashes) if h not in found]
        if missing and persisted:
            for h, v in self._load(missing).items():
                found[h] = v
                self._remember(h, v)
        return found

    def _load(self, hashes: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        ds = self.store.dataset("_embeddings")
        for i in range(0, len(hashes), 1000):
            chunk = hashes[i:i + 1000]
            flt = (f"model_id = {quote(self.model_id)} AND text_hash IN "
                   f"({', '.join(quote(h) for h in chunk)})")
            t = ds.to_table(columns=["text_hash", "vector"], filter=flt)
            vecs = _matrix(t["vector"], self.dim)
            out.update(zip(t["text_hash"].to_pylist(), vecs, strict=True))
        return out

    def load_all(self) -> tuple[list[str], np.ndarray]:
        """Every persisted vector of this model (index build at start-up)."""
        t = self.store.dataset("_embeddings").to_table(
            columns=["text_hash", "vector"], filter=f"model_id = {quote(self.model_id)}")
        return t["text_hash"].to_pylist(), _matrix(t["vector"], self.dim)

    def _remember(self, h: str, v: np.ndarray) -> None:
        with self._lock:
            self._lru[h] = v
            self._lru.move_to_end(h)
            while len(self._lru) > LRU_SIZE:
                self._lru.popitem(last=False)

    def remember(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        for h, v in zip(hashes, vectors, strict=True):
            self._remember(h, v)

    def persist(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Write new vectors to ``_embeddings`` (one commit; existing keys are kept)."""
        if not len(hashes):
            return
        rows = pa.table({"model_id": [self.model_id] * len(hashes), "text_hash": list(hashes),
                         "vector": pa.FixedSizeListArray.from_arrays(
                             pa.array(np.asarray(vectors, np.float32).ravel()), self.dim)},
                        schema=EMBEDDINGS)
        self.store.upsert("_embeddings", ["model_id", "text_hash"], rows, update=False)
        self.remember(hashes, vectors)


class EmbeddingService:
    """Texts -> vectors through the cache and a micro-batching model worker."""

    def __init__(self, embedder: Embedder, cache: VectorCache, batch: int = BATCH):
        self.embedder, self.cache, self.batch = embedder, cache, batch
        self._queue: list[tuple[str, str, Future]] = []
        self._cv = threading.Condition()
        self._stop = False
        self._worker = threading.Thread(target=self._run, name="lake-embedder", daemon=True)
        self._worker.start()
        self.model_calls = 0
        self.model_texts = 0

    def embed(self, texts: Sequence[str], *, persisted: bool = True) -> np.ndarray:
        """Vectors for ``texts`` (normalized first), shape (len(texts), dim)."""
        norm = [normalize_task(t) for t in texts]
        hashes = [task_hash(t) for t in texts]
        return self.embed_hashed(hashes, norm, persisted=persisted)

    def embed_hashed(self, hashes: Sequence[str], normalized: Sequence[str], *,
                     persisted: bool = True) -> np.ndarray:
        found = self.cache.get_many(hashes, persisted=persisted)
        futures: dict[str, Future] = {}
        for h, text in zip(hashes, normalized, strict=True):
            if h not in found and h not in futures:
                futures[h] = self._submit(h, text)
        for h, fut in futures.items():
            found[h] = fut.result()
        out = np.empty((len(hashes), self.embedder.dim), np.float32)
        for i, h in enumerate(hashes):
            out[i] = found[h]
        return out

    def _submit(self, h: str, text: str) -> Future:
        fut: Future = Future()
        with self._cv:
            if self._stop:
                raise RuntimeError("the embedding service is closed")
            self._queue.append((h, text, fut))
            self._cv.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait()
                if self._stop and not self._queue:
                    return
                work, self._queue = self._queue[: self.batch], self._queue[self.batch:]
            uniq: dict[str, str] = {}
            for h, text, _ in work:
                uniq.setdefault(h, text)
            try:
                vecs = self.embedder.embed(list(uniq.values()))
            except BaseException as e:  # noqa: BLE001 - handed to every waiter
                for _, _, fut in work:
                    fut.set_exception(e)
                continue
            self.model_calls += 1
            self.model_texts += len(uniq)
            by = dict(zip(uniq, vecs, strict=True))
            self.cache.remember(list(by), np.stack(list(by.values())))
            for h, _, fut in work:
                fut.set_result(by[h])

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._worker.join(timeout=30)


def _matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    if len(column) == 0:
        return np.zeros((0, dim), np.float32)
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(-1, dim), dtype=np.float32)
