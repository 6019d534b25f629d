"""The linter and the type checker pass over the package (CI runs them with the tests).

ruff reads ``ruff.toml``; mypy reads ``mypy.ini`` and checks every module of
``hybridvla_ros``, including that each implementation satisfies the ``typing.Protocol``
it is used as (``policies.Policy``, ``sim.Simulator``).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def test_ruff_finds_nothing() -> None:
    out = _run("ruff", "check", "--no-cache", ".", timeout_s=300)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_mypy_finds_nothing() -> None:
    out = _run("mypy", "--config-file", os.path.join(ROOT, "mypy.ini"), timeout_s=900)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
