"""Checks that a converted network is what it claims to be.

*Prefix equivalence*: at any width, the slimmed network computes what the full original model
computes when the weights, biases and norm parameters of every inactive channel are zeroed
(and norms that reduce over channels see only the active ones). A wrong channel rule breaks
this even where every shape still fits.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import ConversionError, first_line
from .net import SlimmableNet
from .nn.kinds import BATCH_NORM_TYPES, GROUP_NORM_TYPES, LAYER_NORM_TYPES, WEIGHT_STANDARDIZED_CONV_TYPES
from .nn import SlimConv, SlimGroupNorm, SlimLayerNorm, SlimLinear, SlimRecurrent
from .nn.base import overridden
from .nn.layout import take


class MaskedReference:
    """The original model, called so that it computes at full width what ``net`` computes at its
    current width: every layer's inactive output channels are zeroed (its inactive inputs too,
    where inputs and outputs are not tied by groups), and so are the inactive channels of the
    tensors the network slices outside its layers. The model itself is not changed: the masks
    are hooks, placed for one call, and tensors are swapped in for the call only
    (:func:`torch.func.functional_call`), with ``tensors`` (by name) in place of the model's own."""

    def __init__(self, model: nn.Module, net: SlimmableNet, tensors: dict[str, torch.Tensor] | None = None):
        self.model, self.net, self.tensors = model, net, dict(tensors or {})

    def __call__(self, *inputs: torch.Tensor) -> Any:
        training = [module for module in self.model.modules() if module.training]
        hooks = self._hooks()
        try:
            for module in training:
                module.training = False
            with torch.no_grad():
                swapped = {**self.tensors, **self._masked_tensors()}
                if not swapped:  # the model's own tensors: a plain call, without functional_call's swap
                    return self.model(*inputs)
                return torch.func.functional_call(self.model, swapped, inputs)
        finally:
            for handle in hooks:
                handle.remove()
            for module in training:
                module.training = True

    def _masked_tensors(self) -> dict[str, torch.Tensor]:
        """A position embedding, a layer scale, a weight read outside its layer: masked copies."""
        masked: dict[str, torch.Tensor] = {}
        for target, helper in self.net.sliced_tensors():
            owner, _, name = target.rpartition(".")
            tensor = masked.get(target, self.tensors.get(target, getattr(self.model.get_submodule(owner), name)))
            for dim, layout in enumerate(helper.layouts):
                if layout is not None and layout.active_size() < tensor.shape[dim]:
                    masked[target] = tensor = tensor * _mask(layout.indices(), tensor, dim)
        return masked

    def _hooks(self) -> list[Any]:
        handles = []
        for name, layer in self.net.layers.items():
            module = self.model.get_submodule(name)
            channels = self.net.active_channels(name)
            if isinstance(layer, (SlimConv, SlimLinear)):
                dim = -1 if isinstance(layer, SlimLinear) else 1
                inputs_tied = getattr(module, "groups", 1) != 1
                if not inputs_tied and len(channels["in"]) < layer.full_sizes[0]:
                    if isinstance(module, WEIGHT_STANDARDIZED_CONV_TYPES):  # standardises over its active inputs
                        handles += _ActiveInputs(channels["in"]).attach(module)
                    else:  # inactive inputs may hold f(0) != 0 (a sigmoid gate)
                        handles.append(module.register_forward_pre_hook(_InputMask(channels["in"], dim)))
                if len(channels["out"]) < layer.full_sizes[1]:
                    handles.append(module.register_forward_hook(_OutputMask(channels["out"], dim)))
            elif isinstance(layer, SlimRecurrent):  # its outputs (hidden units) never slim
                if len(channels["in"]) < layer.input_size:
                    handles.append(module.register_forward_pre_hook(_InputMask(channels["in"], -1)))
            elif len(channels["channel"]) < layer.channel_count:
                reduces_over_channels = isinstance(layer, SlimLayerNorm) or (
                    isinstance(layer, SlimGroupNorm) and layer.num_groups == 1)
                mask = (_ActiveChannelNorm if reduces_over_channels else _OutputMask)(channels["channel"],
                                                                                        layer.channel_layout_dim)
                handles.append(module.register_forward_hook(mask))
        return handles


def _mask(active: list[int], like: torch.Tensor, dim: int) -> torch.Tensor:
    """Ones at the active indices of ``dim``, zeros elsewhere, shaped to broadcast against ``like``."""
    mask = torch.zeros(like.shape[dim], dtype=like.dtype, device=like.device)
    if active == list(range(len(active))):  # leading channels, the common case: no index tensor to build
        mask[:len(active)] = 1
    else:
        mask[active] = 1
    shape = [1] * like.dim()
    shape[dim] = -1
    return mask.view(shape)


class _InputMask:
    def __init__(self, active: list[int], dim: int):
        self.active, self.dim = active, dim

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0] * _mask(self.active, args[0], self.dim), *args[1:])


class _OutputMask:
    def __init__(self, active: list[int], dim: int):
        self.active, self.dim = active, dim

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output * _mask(self.active, output, self.dim)


class _ActiveChannelNorm:
    """Forward hook: rerun a channel-reducing norm on the active channels only, through the
    module's own forward (a timm ``LayerNormAct2d`` permutes, normalises, then activates)."""

    def __init__(self, active: list[int], dim: int):
        self.active = torch.tensor(active)
        self.dim = dim

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        index = self.active.to(x.device)
        # written out here, not the slimmable layers' own narrowing: this is the reference they are checked against
        tensors = {name: take(module._parameters[name], 0, index) for name in ("weight", "bias")
                   if module._parameters.get(name) is not None}
        if isinstance(module, nn.GroupNorm):
            sizes = {"num_channels": len(index)}
        else:
            sizes = {"normalized_shape": (len(index),)} if "normalized_shape" in vars(module) else {}
        with overridden(module, tensors, **sizes):
            y = module.forward(x.index_select(self.dim, index))
        return torch.zeros_like(output).index_copy(self.dim, index, y)


class _ActiveInputs:
    """Hooks: a weight-standardised convolution sees only its active input channels (it
    standardises each filter over them), as the slimmed layer does."""

    def __init__(self, active: list[int]):
        self.active = torch.tensor(active)
        self.full: torch.Tensor | None = None

    def attach(self, module: nn.Module) -> list[Any]:
        return [module.register_forward_pre_hook(self.before), module.register_forward_hook(self.after)]

    def before(self, module: nn.Module, args: tuple) -> tuple:
        index = self.active.to(args[0].device)
        self.full = module._parameters["weight"]
        module._parameters["weight"] = self.full.index_select(1, index)
        return (args[0].index_select(1, index), *args[1:])

    def after(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        module._parameters["weight"] = self.full


def relative_error(a: Any, b: Any) -> float:
    """Max abs difference relative to the reference ``b``'s scale; for outputs that are tuples,
    lists or dicts of tensors (torchvision's segmentation models), the largest over their
    tensors, each against its own scale. Infinite where structures, shapes or other values differ."""
    try:
        return max((_leaf_error(x, y) for x, y in _paired_leaves(a, b)), default=0.0)
    except _StructureMismatch:
        return math.inf


class _StructureMismatch(Exception):
    pass


def _paired_leaves(a: Any, b: Any) -> Iterator[tuple[Any, Any]]:
    """The leaves of two outputs side by side; a dict and an OrderedDict with the same keys
    match (a GraphModule returns the one where the model returned the other)."""
    if isinstance(b, Mapping):
        if not isinstance(a, Mapping) or list(a) != list(b):
            raise _StructureMismatch
        for key in b:
            yield from _paired_leaves(a[key], b[key])
    elif isinstance(b, (list, tuple)):
        if not isinstance(a, (list, tuple)) or len(a) != len(b):
            raise _StructureMismatch
        for x, y in zip(a, b):
            yield from _paired_leaves(x, y)
    else:
        yield a, b


def _leaf_error(a: Any, b: Any) -> float:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return 0.0 if type(a) is type(b) and a == b else math.inf
    if a.shape != b.shape:
        return math.inf
    a, b = a.detach(), b.detach()
    if not b.is_floating_point() and not b.is_complex():
        return 0.0 if torch.equal(a.to(b.dtype), b) else math.inf
    if b.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def prefix_error(model: nn.Module | MaskedReference, net: SlimmableNet, width: Any, inputs: torch.Tensor) -> float:
    """Relative error between ``net`` at ``width`` and the masked reference of ``model`` (or the
    given one), both in eval mode with the same statistics: the reference's own, which ``net``
    uses sliced to its active channels. (Eval mode, because functional dropout traced in train
    mode cannot be turned off.)"""
    reference = model if isinstance(model, MaskedReference) else MaskedReference(model, net)
    net.set_width(width)
    net.eval()
    with net.sliced_statistics(), torch.no_grad():
        return relative_error(net(inputs), reference(inputs))


def tolerance(dtype: torch.dtype) -> float:
    """The relative error at which the same function, computed in ``dtype`` with its sums in
    another order, counts as different."""
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
    take part in a mismatch are frozen with the reason. The network and the model get the same
    :func:`informative_values` for the check, written in place and restored afterwards, so that
    a wrong channel shows even in a fresh model (behind a zero classifier, a residual branch
    whose last norm starts at zero, a layer scale of 1e-6).

    Images are checked at about an eighth of their side (224 -> 32) where the traced graph runs
    there and agrees with the model at width 1.0 (channel rules do not depend on the spatial
    extent, and the forward passes cost a fiftieth), else at the traced size."""
    report = SelfCheck()
    values = informative_values(model, seed)
    own = {name for name, _ in (*net.model.named_parameters(), *net.model.named_buffers())}
    reference = MaskedReference(model, net)
    previous, was_training, cache = net.width, net.training, net.eval_cache
    net.eval_cache = False  # the slicing path, which training uses too
    net.eval()
    try:
        with _in_place(model, values), _in_place(net.model, {k: v for k, v in values.items() if k in own}):
            _check(net, reference, report, batch, seed)
    finally:
        net.eval_cache = cache
        net.set_width(previous if not isinstance(previous, dict) else 1.0)
        net.train(was_training)
    return report


def _check(net: SlimmableNet, reference: MaskedReference, report: SelfCheck, batch: int, seed: int) -> None:
    """The self-check's comparisons, recorded in ``report`` (the values are informative by now)."""
    p = next(iter(net.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    allowed = tolerance(dtype)
    net.set_width(1.0)
    candidates = _check_inputs(net, batch, seed, dtype, p.device if p is not None else torch.device("cpu"))
    for x in candidates:
        last = x is candidates[-1]
        with torch.no_grad():
            try:
                expected = reference(x)
                got = net(x)
            except Exception as exc:
                if not last:
                    continue
                raise ConversionError(f"the converted network fails at width 1.0 on a batch of {batch}: "
                                      f"{first_line(exc)}") from exc
        error = relative_error(got, expected)
        if error <= allowed or last:
            break
    report.errors["1.0"] = error
    if not error <= allowed:
        raise ConversionError(f"the converted network differs from the model at width 1.0 on a batch of {batch} "
                              f"(relative error {error:.1e}); please report this model")
    ratios = spread_configuration(net, seed)
    for label in ("min", "nonuniform"):
        def configuration() -> dict[str, float]:  # the spaces still slimmable, as this check left them
            return {s.name: net.min_width if label == "min" else ratios[s.name] for s in net.slimmable_spaces}

        def fails(names: list[str]) -> bool:
            width = {name: ratio for name, ratio in configuration().items() if name in names}
            return not _prefix_error(reference, net, width, x) <= allowed

        report.errors[label] = _prefix_error(reference, net, configuration(), x)
        while not report.errors[label] <= allowed:
            width = configuration()
            shrunk = [name for name in width if net.space(name).active < net.space(name).size]
            culprits = _culprits(shrunk, fails) if shrunk else []
            if not culprits:  # a mismatch no single space explains: nothing slimmable stays trusted
                culprits = list(width)
            reason = f"failed the conversion self-check at the {label} width"
            for name in culprits:
                report.frozen[name] = reason
            net.freeze_spaces(dict.fromkeys(culprits, reason))
            report.errors[label] = _prefix_error(reference, net, configuration(), x)


@contextmanager
def _in_place(model: nn.Module, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """Within the block, the model's tensors of these names hold these values (written in
    place once, rather than swapped in for every call; given back afterwards)."""
    modules = dict(model.named_modules())
    targets = []
    for name in tensors:
        owner, _, key = name.rpartition(".")
        targets.append(getattr(modules[owner], key))
    if not targets:  # (the foreach copies refuse empty lists)
        yield
        return
    with torch.no_grad():
        saved = [tensor.detach().clone() for tensor in targets]  # all taken before any write
        try:
            torch._foreach_copy_(targets, list(tensors.values()))
            yield
        finally:
            torch._foreach_copy_(targets, saved)


_CHECK_SIDE = 32  # an image side of the self-check: an eighth of the traced side, in multiples of 32


def _check_inputs(net: SlimmableNet, batch: int, seed: int, dtype: torch.dtype,
                  device: torch.device) -> list[torch.Tensor]:
    """The self-check's input at a reduced image size where there is one, then at the traced size."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [tuple(net.input_size)]
    if len(net.input_size) == 3 and min(net.input_size[1:]) > _CHECK_SIDE:
        sizes.insert(0, (net.input_size[0], *(_CHECK_SIDE * math.ceil(side / (8 * _CHECK_SIDE))
                                             for side in net.input_size[1:])))
    return [torch.randn(batch, *size, generator=generator).to(device, dtype) for size in sizes]


def spread_configuration(net: SlimmableNet, seed: int = 0) -> dict[str, float]:
    """A nonuniform width whose spaces take ratios spread evenly over [min_width, 1.0), in a
    seeded random order: any two spaces differ as much as the count allows (independent
    uniform ratios often round two neighbours to the same channel count, hiding a missed tie)."""
    names = [space.name for space in net.slimmable_spaces]
    ratios = [net.min_width + (1.0 - net.min_width) * (k + 0.5) / len(names) for k in range(len(names))]
    random.Random(seed).shuffle(ratios)
    return dict(zip(names, ratios))


def _prefix_error(reference: MaskedReference, net: SlimmableNet, width: Any, x: torch.Tensor) -> float:
    try:
        return prefix_error(reference, net, width, x)
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


_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")
_NORM_TYPES = BATCH_NORM_TYPES + GROUP_NORM_TYPES + LAYER_NORM_TYPES


def informative_values(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values, by name, for the tensors of ``model`` behind which a wrong channel would
    hide from a comparison: the norms' parameters and running statistics, and every floating
    parameter whose elements are all equal. A fresh model starts many at one value, and what
    follows them then computes nothing a check sees: torchvision's ViT starts its classifier at
    zero (every output is its bias), timm's ResNets the last norm of each residual branch,
    ConvNeXt its layer scales at 1e-6, NFNets their skip gains at 0. Biases and means are drawn
    from [-0.5, 0.5), the rest from [0.5, 1.5)."""
    generator = torch.Generator().manual_seed(seed)
    norms = {name for name, module in model.named_modules() if isinstance(module, _NORM_TYPES)}
    parameters = dict(model.named_parameters())
    values: dict[str, torch.Tensor] = {}
    for name, tensor in (*parameters.items(), *model.named_buffers()):
        owner, _, key = name.rpartition(".")
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        constant = name in parameters and bool((tensor == tensor.flatten()[0]).all())
        if constant or (owner in norms and key in _NORM_TENSORS):
            low, high = (-0.5, 0.5) if key in ("bias", "running_mean") else (0.5, 1.5)
            values[name] = (torch.rand(tensor.shape, generator=generator) * (high - low) + low).to(tensor)
    return values


def write_informative_values(model: nn.Module, seed: int = 0) -> nn.Module:
    """Write :func:`informative_values` into ``model`` for good (a census's fresh model, a test's)."""
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for name, value in informative_values(model, seed).items():
            tensors[name].copy_(value)
    return model
