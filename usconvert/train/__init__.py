"""Training a converted network as a US-Net: the sandwich rule and inplace distillation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..net import SlimmableNet
from .config import TrainConfig, make_config
from .sampling import WidthSampler
from .step import NonFiniteLossError, sandwich_step
from .trainer import Trainer, TrainingInterrupted


def train(net: SlimmableNet, output: str | Path | None = None, *, recipe: str | Path | None = None,
          resume: str | Path | None = None, **settings: Any) -> list[dict[str, Any]]:
    """Train ``net`` in place (settings: the fields of :class:`TrainConfig`, over a recipe);
    returns one record per epoch. With ``output``, writes the trained network there, a
    checkpoint and a JSON-lines log next to it."""
    return Trainer(net, make_config(recipe, **settings), output, resume=resume).fit()


__all__ = ["NonFiniteLossError", "TrainConfig", "Trainer", "TrainingInterrupted", "WidthSampler", "make_config",
           "sandwich_step", "train"]
