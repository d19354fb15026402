"""Checks that a converted network is what it claims to be.

*Prefix equivalence*: at any width, the slimmed network computes what the full original model
computes when the weights, biases and norm parameters of every inactive channel are zeroed
(and norms that reduce over channels see only the active ones). A wrong channel rule breaks
this even where every shape still fits.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .net import SlimmableNet
from .nn.parametrized import bake, detach_hook_tensors
from .nn.kinds import WEIGHT_STANDARDIZED_CONV_TYPES
from .nn import SlimConv, SlimGroupNorm, SlimLayerNorm, SlimLinear
from .nn.base import overridden
from .nn.layout import take


def masked_reference(model: nn.Module, net: SlimmableNet) -> nn.Module:
    """A copy of the original ``model`` that computes, at full width, what ``net`` computes at
    its current width."""
    detach_hook_tensors(model)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in net.layers.items():
            module = reference.get_submodule(name)
            bake(module, type(module))  # zero the computed weight, not its parametrization
            channels = net.active_channels(name)
            if isinstance(layer, (SlimConv, SlimLinear)):
                _zero_except(module.weight, 0, channels["out"])
                _zero_except(module.bias, 0, channels["out"])
                if getattr(module, "groups", 1) == 1:  # inactive inputs may hold f(0) != 0 (a sigmoid gate)
                    _zero_except(module.weight, 1, channels["in"])
                if (isinstance(module, WEIGHT_STANDARDIZED_CONV_TYPES) and module.groups == 1
                        and len(channels["in"]) < module.in_channels):
                    _ActiveInputs(channels["in"]).attach(module)
            else:
                _zero_except(module.weight, 0, channels["channel"])
                _zero_except(module.bias, 0, channels["channel"])
                reduces_over_channels = isinstance(layer, SlimLayerNorm) or (
                    isinstance(layer, SlimGroupNorm) and layer.num_groups == 1)
                if reduces_over_channels and len(channels["channel"]) < layer.channel_count:
                    module.register_forward_hook(_ActiveChannelNorm(channels["channel"], layer.channel_dim))
        _zero_inactive_tensors_outside_layers(reference, net)
    return reference


def _zero_inactive_tensors_outside_layers(reference: nn.Module, net: SlimmableNet) -> None:
    """Tensors the network slices at run time (a position embedding added to the stream, a
    layer scale): zero where the width leaves no channel, as the layers' weights are."""
    for target, helper in net.sliced_tensors():
        owner, _, name = target.rpartition(".")
        tensor = getattr(reference.get_submodule(owner), name)  # a parameter or a buffer
        for dim, layout in enumerate(helper.layouts):
            if layout is not None:
                _zero_except(tensor.data, dim, layout.indices())


def _zero_except(tensor: torch.Tensor | None, dim: int, keep: list[int]) -> None:
    if tensor is None:
        return
    mask = torch.ones(tensor.shape[dim], dtype=torch.bool)
    mask[keep] = False
    tensor.index_fill_(dim, mask.nonzero().flatten().to(tensor.device), 0.0)


class _ActiveChannelNorm:
    """Forward hook: rerun a channel-reducing norm on the active channels only, through the
    module's own forward (a timm ``LayerNormAct2d`` permutes, normalises, then activates)."""

    def __init__(self, active: list[int], dim: int):
        self.active = torch.tensor(active)
        self.dim = dim

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        index = self.active.to(x.device)
        sizes = ({"num_channels": len(index)} if isinstance(module, nn.GroupNorm)
                 else {"normalized_shape": (len(index),)})
        with overridden(module, {"weight": take(module.weight, 0, index), "bias": take(module.bias, 0, index)},
                        **sizes):
            y = module.forward(x.index_select(self.dim, index))
        return torch.zeros_like(output).index_copy(self.dim, index, y)


class _ActiveInputs:
    """Hooks: a weight-standardised convolution sees only its active input channels (it
    standardises each filter over them), as the slimmed layer does."""

    def __init__(self, active: list[int]):
        self.active = torch.tensor(active)
        self.full: torch.Tensor | None = None

    def attach(self, module: nn.Module) -> None:
        module.register_forward_pre_hook(self.before)
        module.register_forward_hook(self.after)

    def before(self, module: nn.Module, args: tuple) -> tuple:
        index = self.active.to(args[0].device)
        self.full = module._parameters["weight"]
        module._parameters["weight"] = self.full.index_select(1, index)
        return (args[0].index_select(1, index), *args[1:])

    def after(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        module._parameters["weight"] = self.full


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to the reference's scale."""
    scale = b.abs().max().clamp_min(1e-12)
    return float((a - b).abs().max() / scale)


def prefix_error(model: nn.Module, net: SlimmableNet, width: Any, inputs: torch.Tensor) -> float:
    """Relative error between ``net`` at ``width`` and the masked reference, both in eval mode
    with the same statistics: the reference's own, which ``net`` uses sliced to its active
    channels. (Eval mode, because functional dropout traced in train mode cannot be turned off.)"""
    net.set_width(width)
    reference = masked_reference(model, net).eval()
    net.eval()
    with net.sliced_statistics(), torch.no_grad():
        return relative_error(net(inputs), reference(inputs))
