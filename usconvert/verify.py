"""Checks that a converted network is what it claims to be.

*Prefix equivalence*: at any width, the slimmed network computes what the full original model
computes when the weights, biases and norm parameters of every inactive channel are zeroed
(and norms that reduce over channels see only the active ones). A wrong channel rule breaks
this even where every shape still fits.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import ConversionError
from .net import SlimmableNet
from .nn.parametrized import bake, detach_hook_tensors
from .nn.kinds import WEIGHT_STANDARDIZED_CONV_TYPES
from .nn import SlimBatchNorm, SlimConv, SlimGroupNorm, SlimLayerNorm, SlimLinear
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


def _tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-9, torch.float32: 1e-4}.get(dtype, 2e-2)


@dataclass
class SelfCheck:
    """What the conversion self-check found: the spaces it froze and the errors it measured."""

    frozen: dict[str, str] = field(default_factory=dict)  # space name -> reason
    errors: dict[str, float] = field(default_factory=dict)  # "1.0", "min", "nonuniform" -> relative error


def self_check(model: nn.Module, net: SlimmableNet, *, batch: int = 1, seed: int = 0) -> SelfCheck:
    """Check ``net`` against the ``model`` it was converted from, at a batch other than the
    traced one (2): equal at width 1.0 (else :class:`ConversionError`), and equal to the masked
    reference at the minimum width and at one random nonuniform configuration. Spaces that
    take part in a mismatch are frozen with the reason. Norms get random parameters for the
    check (restored afterwards), so that a wrong channel of a norm shows even in a fresh model."""
    report = SelfCheck()
    reference_model = copy.deepcopy(model).eval()
    saved = _randomize_norms(reference_model, net, seed)
    previous, was_training, cache = net.width, net.training, net.eval_cache
    net.eval_cache = False  # the slicing path, which training uses too
    net.eval()
    try:
        p = next(iter(net.parameters()), None)
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        device = p.device if p is not None else torch.device("cpu")
        x = torch.randn(batch, *net.input_size, generator=torch.Generator().manual_seed(seed)).to(device, dtype)
        tolerance = _tolerance(dtype)
        net.set_width(1.0)
        with torch.no_grad():
            try:
                error = relative_error(net(x), reference_model(x))
            except Exception as exc:
                raise ConversionError(f"the converted network fails at width 1.0 on a batch of {batch}: "
                                      f"{_first_line(exc)}") from exc
        report.errors["1.0"] = error
        if not error <= tolerance:
            raise ConversionError(f"the converted network differs from the model at width 1.0 on a batch of {batch} "
                                  f"(relative error {error:.1e}); please report this model")
        ratios = spread_configuration(net, seed)
        for label in ("min", "nonuniform"):
            def configuration() -> dict[str, float]:  # the spaces still slimmable, as this check left them
                return {s.name: net.min_width if label == "min" else ratios[s.name] for s in net.slimmable_spaces}

            def fails(names: list[str]) -> bool:
                width = {name: ratio for name, ratio in configuration().items() if name in names}
                return not _prefix_error(reference_model, net, width, x) <= tolerance

            report.errors[label] = _prefix_error(reference_model, net, configuration(), x)
            while not report.errors[label] <= tolerance:
                width = configuration()
                shrunk = [name for name in width if net.space(name).active < net.space(name).size]
                culprits = _culprits(shrunk, fails) if shrunk else []
                if not culprits:  # a mismatch no single space explains: nothing slimmable stays trusted
                    culprits = list(width)
                reason = f"failed the conversion self-check at the {label} width"
                for name in culprits:
                    report.frozen[name] = reason
                net.freeze_spaces(dict.fromkeys(culprits, reason))
                report.errors[label] = _prefix_error(reference_model, net, configuration(), x)
    finally:
        _restore(net, saved)
        net.eval_cache = cache
        net.set_width(previous if not isinstance(previous, dict) else 1.0)
        net.train(was_training)
    return report


def spread_configuration(net: SlimmableNet, seed: int = 0) -> dict[str, float]:
    """A nonuniform width whose spaces take ratios spread evenly over [min_width, 1.0), in a
    seeded random order: any two spaces differ as much as the count allows (independent
    uniform ratios often round two neighbours to the same channel count, hiding a missed tie)."""
    names = [space.name for space in net.slimmable_spaces]
    ratios = [net.min_width + (1.0 - net.min_width) * (k + 0.5) / len(names) for k in range(len(names))]
    random.Random(seed).shuffle(ratios)
    return dict(zip(names, ratios))


def _prefix_error(reference_model: nn.Module, net: SlimmableNet, width: Any, x: torch.Tensor) -> float:
    try:
        return prefix_error(reference_model, net, width, x)
    except Exception:  # a crash at a reduced width is a mismatch too
        return math.inf
    finally:
        net.set_width(1.0)


def _culprits(names: list[str], fails: Any) -> list[str]:
    """A small set of spaces whose shrinking alone reproduces the failure (bisection; where only
    spaces from both halves together fail, all of them)."""
    if len(names) <= 1:
        return names
    half = len(names) // 2
    for part in (names[:half], names[half:]):
        if fails(part):
            return _culprits(part, fails)
    return names


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _randomize_norms(reference_model: nn.Module, net: SlimmableNet, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Give the norms of both models the same random parameters and statistics; returns the
    network's own, to restore."""
    generator = torch.Generator().manual_seed(seed)
    saved: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for name, layer in net.layers.items():
            if not isinstance(layer, (SlimBatchNorm, SlimGroupNorm, SlimLayerNorm)):
                continue
            original = reference_model.get_submodule(name)
            saved[name] = {}
            for key in _NORM_TENSORS:
                tensor = getattr(layer, key, None)
                if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                    continue
                low, high = (0.5, 1.5) if key in ("weight", "running_var") else (-0.5, 0.5)
                value = torch.rand(tensor.shape, generator=generator) * (high - low) + low
                saved[name][key] = tensor.detach().clone()
                tensor.copy_(value.to(tensor))
                getattr(original, key).copy_(value.to(tensor))
    return saved


def _restore(net: SlimmableNet, saved: dict[str, dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for name, tensors in saved.items():
            for key, value in tensors.items():
                getattr(net.layers[name], key).copy_(value)
