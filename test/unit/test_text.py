"""Instruction encoders: the frozen pretrained MiniLM (offline), a local model directory, the hashed fallback."""
from __future__ import annotations

import numpy as np
import pytest

from hybridvla_ros.model.text import (
    DIR_PREFIX,
    HASH_ENCODER,
    MINILM,
    MINILM_DIM,
    embed_instruction,
    get_encoder,
    minilm_dir,
)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_minilm_loads_offline_and_embeds_normalized_384d(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    v = embed_instruction("Reach the red target", MINILM_DIM, MINILM)
    assert v.shape == (MINILM_DIM,) and v.dtype == np.float32
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert get_encoder(MINILM) is get_encoder(MINILM)  # one model per process


def test_paraphrases_embed_closer_than_unrelated_instructions() -> None:
    e = lambda s: embed_instruction(s, MINILM_DIM, MINILM)  # noqa: E731
    reach, paraphrase = e("reach the red target"), e("move the gripper to the red goal")
    for unrelated in ("open the top drawer", "pour water into the cup", "fold the towel"):
        assert _cos(reach, paraphrase) > _cos(reach, e(unrelated)) + 0.1, unrelated


def test_a_local_model_directory_is_an_encoder_too() -> None:
    name = DIR_PREFIX + str(minilm_dir())
    a = embed_instruction("reach the target", MINILM_DIM, name)
    np.testing.assert_allclose(a, embed_instruction("reach the target", MINILM_DIM, MINILM), atol=1e-5)


def test_wrong_dimension_unknown_name_and_empty_directory_are_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"embeds to 384 dimensions.*instruction_dim 256"):
        embed_instruction("reach", 256, MINILM)
    with pytest.raises(ValueError, match=r"instruction_encoder: must be .*'bert-large'"):
        embed_instruction("reach", 384, "bert-large")
    with pytest.raises(ValueError, match="no sentence-transformers model in"):
        embed_instruction("reach", 384, DIR_PREFIX + str(tmp_path))


def test_hashed_fallback_is_deterministic_and_normalised() -> None:
    a, b = embed_instruction("Reach the red target", 64, HASH_ENCODER), embed_instruction("reach  the red target", 64)
    assert a.shape == (64,) and np.allclose(a, b)
    assert np.linalg.norm(a) == pytest.approx(1.0)
    assert not np.allclose(a, embed_instruction("open the drawer", 64))
