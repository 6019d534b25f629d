"""Plots of training: the loss curve written next to every checkpoint (``loss.png``).

matplotlib is imported inside the function with the Agg backend, so importing the model
library never needs a display or pays matplotlib's import time.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def plot_losses(step_embodiment: Sequence[str], step_loss: Sequence[float], path: str | os.PathLike[str]) -> None:
    """Loss per embodiment against step (raw and smoothed), log scale, into a PNG at ``path``.
    Raises OSError when the file cannot be written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    emb = np.asarray(step_embodiment)
    loss = np.asarray(step_loss, dtype=np.float64)
    for i, name in enumerate(dict.fromkeys(step_embodiment)):
        steps = np.flatnonzero(emb == name)
        y = loss[steps]
        window = max(1, min(25, len(y) // 10))
        smooth = np.convolve(y, np.ones(window) / window, mode="valid")              # (len - window + 1,)
        color = f"C{i}"
        ax.plot(steps, y, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(steps[window - 1:], smooth, color=color, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (token: cross-entropy, flow: velocity MSE)")
    ax.set_title("HybridPolicy training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
