"""One iteration of Algorithm 1: every sampled width does forward and backward at once (the
memory of one model), gradients accumulate, and the caller takes one optimizer step."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Sequence

import torch
from torch import nn

from ..errors import UsconvertError
from ..net import SlimmableNet, Width
from .losses import Loss


class NonFiniteLossError(UsconvertError):
    """The loss became NaN or infinite."""


def sandwich_step(model: nn.Module, net: SlimmableNet, inputs: torch.Tensor, targets: torch.Tensor,
                  widths: Sequence[Width], *, criterion: Loss, distill: Loss | None,
                  autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                  backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                  raise_on_non_finite: bool = True, teacher_output: torch.Tensor | None = None) -> list[float]:
    """Forward and backward every width; return the losses. ``model`` is ``net`` or its DDP
    wrapper: gradients are all-reduced only in the last backward.

    With ``teacher_output`` (a frozen teacher's, computed once for the batch), every width
    learns from the labels plus ``distill`` against it. Otherwise (inplace distillation), the
    first width, when it is 1.0 and ``distill`` is given, learns from the labels and teaches the
    others with its detached output; without ``distill`` every width learns from the labels.
    Under ``autocast`` only the network runs in low precision: both losses are computed in
    float32 from its outputs. A NaN or infinite loss raises :class:`NonFiniteLossError` (unless
    ``raise_on_non_finite`` is off: a distributed caller decides on all ranks at once).
    """
    teacher = None
    losses = []
    last = len(widths) - 1
    for index, width in enumerate(widths):
        net.set_width(width)
        sync = contextlib.nullcontext() if index == last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast():
                output = model(inputs)
            output = output.float()
            if teacher_output is not None:
                loss = criterion(output, targets) + distill(output, teacher_output)
            else:
                loss = criterion(output, targets) if teacher is None else distill(output, teacher)
            if index == 0 and distill is not None and width == 1.0 and teacher_output is None:
                teacher = output.detach()
            backward(loss)
        losses.append(loss.detach())
    values = torch.stack(losses).tolist()
    if raise_on_non_finite and (message := non_finite(widths, values)) is not None:
        raise NonFiniteLossError(message)
    return values


def non_finite(widths: Sequence[Width], losses: Sequence[float]) -> str | None:
    """What went wrong when a loss is NaN or infinite, else None."""
    for width, value in zip(widths, losses):
        if value != value or value in (float("inf"), float("-inf")):
            label = f"{width:g}" if isinstance(width, float) else "a nonuniform width"
            return f"the loss at width {label} became {value}"
    return None
