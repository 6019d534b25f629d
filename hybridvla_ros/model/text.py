"""Instruction text -> fixed-size embedding.

For now a deterministic hashed bag of character 3-grams (the "hashing trick"): the
lower-cased, whitespace-collapsed instruction, padded with one space each side, is cut
into overlapping 3-character windows; each window adds +1 or -1 (a second hash bit, so
collisions cancel on average instead of piling up) to one of ``INSTRUCTION_DIM`` slots,
and the vector is L2-normalised. Same text -> same vector on every machine and Python
run (crc32, not the salted builtin ``hash``).

A pretrained sentence encoder replaces this later; everything else only calls
:func:`embed_instruction` and reads :data:`INSTRUCTION_DIM`.
"""
from __future__ import annotations

import zlib

import numpy as np

INSTRUCTION_DIM = 256  # E, length of the embedding
NGRAM = 3


def normalize_instruction(text: str) -> str:
    """Lower-case and collapse runs of whitespace, so trivial variants embed alike."""
    return " ".join(text.lower().split())


def embed_instruction(text: str, dim: int = INSTRUCTION_DIM) -> np.ndarray:
    """(dim,) float32 L2-normalised embedding of ``text``; all zeros for blank text."""
    if not isinstance(text, str):
        raise TypeError(f"instruction must be a str, got {type(text).__name__}: {text!r}")
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
