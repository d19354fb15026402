"""Optimizer and schedule through timm's factories, with the paper's weight-decay groups."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..nn import SlimConv


def parameter_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on depthwise weights, norms and biases (the paper's setting)."""
    depthwise = {id(m.weight) for m in net.modules()
                 if isinstance(m, (SlimConv, nn.Conv2d)) and m.groups > 1 and m.groups == m.in_channels}
    decay, no_decay = [], []
    for p in net.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or id(p) in depthwise else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(net: nn.Module, *, opt: str, lr: float, weight_decay: float, momentum: float
                     ) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2
    return create_optimizer_v2(net, opt=opt, lr=lr, weight_decay=weight_decay, momentum=momentum,
                               param_group_fn=lambda model: parameter_groups(model, weight_decay))


def create_scheduler(optimizer: torch.optim.Optimizer, *, sched: str, epochs: int, updates_per_epoch: int,
                     warmup_epochs: int, warmup_lr: float, min_lr: float) -> Any:
    """Stepped per iteration. ``linear`` is the paper's decay to ``min_lr`` (timm's poly, power 1)."""
    from timm.scheduler import create_scheduler_v2
    if sched == "constant":
        sched, min_lr = "step", 0.0
        decay = dict(decay_epochs=epochs * 10, decay_rate=1.0)
    elif sched == "linear":
        sched, decay = "poly", dict(decay_rate=1.0)
    else:
        decay = {}
    scheduler, _ = create_scheduler_v2(optimizer, sched=sched, num_epochs=epochs, min_lr=min_lr,
                                       warmup_epochs=warmup_epochs, warmup_lr=warmup_lr, step_on_epochs=False,
                                       updates_per_epoch=updates_per_epoch, **decay)
    return scheduler
