"""Importance-sorted channels: a trained network's leading channels become its most important
ones, so that its narrow widths start from the best sub-network instead of an arbitrary one
(Once-for-All and NVIDIA ModelOpt sort before training elastic widths).

Every slimmable channel space is permuted unit by unit (a unit is what moves together: a
channel, a whole group of a grouped convolution, a whole attention head, all the features a
channel becomes after a flatten, each piece of a concatenation in its own place). The
permutation is applied to every tensor dimension the space indexes (convolution and linear rows
and columns, norm parameters and statistics, per-channel tensors used outside layers), so the
network at width 1.0 computes the same function; :func:`sort_channels` checks that it does.
Frozen spaces stay as they are, and so do spaces along a tensor that a saved network does not
hold (a non-persistent buffer, which the model builds anew when the network is loaded: its
permutation would be lost, and the loaded network would compute another function).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .errors import ConversionError, UsconvertError
from .net import SlimmableNet
from .nn import SlimBatchNorm, Space
from .nn.layout import Layout
from .verify import relative_error, tolerance

CRITERIA = ("none", "l1", "l2", "bn", "taylor")


@dataclass
class Member:
    """One tensor dimension indexed by a layout: a convolution's output rows, its input columns,
    a norm's parameters, a per-channel tensor used outside a layer."""

    tensor: torch.Tensor
    dim: int
    layout: Layout
    scored: bool  # a weight whose values say how important a channel is (not a running statistic)
    norm: bool = False  # a batch norm's scale, which the ``bn`` criterion reads


@dataclass
class SortReport:
    criterion: str
    permuted: dict[str, list[int]] = field(default_factory=dict)  # space name -> the units' new order
    error_at_full_width: float = 0.0  # relative, the network before against after
    kept_in_order: dict[str, str] = field(default_factory=dict)  # space name -> why it was not sorted

    @property
    def moved(self) -> int:
        """Spaces whose order changed."""
        return sum(order != sorted(order) for order in self.permuted.values())


def sort_channels(net: SlimmableNet, criterion: str = "l1", data: Iterable | None = None, *,
                  batches: int = 4) -> SortReport:
    """Permute every slimmable space of ``net`` so that its leading units are its most important,
    in place. ``criterion``: ``l1`` or ``l2`` (the norm of every weight the unit touches, each
    member's scores normalised by their mean so that no one layer dominates), ``bn`` (the batch
    norms' scales, else ``l1``), ``taylor`` (first-order Taylor importance, |sum of weight x
    gradient|, from ``batches`` batches of ``data``: ``(inputs, labels)``), or ``none``.
    Calibrated statistics and private batch-norm weights of other widths no longer fit and are
    dropped. Raises :class:`ConversionError` (and leaves the network as it was) if the sorted
    network does not compute what it did at width 1.0."""
    if criterion not in CRITERIA:
        raise UsconvertError(f"unknown channel-sorting criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    report = SortReport(criterion)
    if criterion == "none":
        return report
    if criterion == "taylor" and data is None:
        raise UsconvertError("--sort-channels taylor needs data (--data) to compute gradients from")
    members = list(_members(net))
    gradients = _taylor_gradients(net, data, batches) if criterion == "taylor" else None
    scores = _scores(net, members, criterion, gradients)
    unsaved = _along_unsaved_tensors(net, members)
    report.kept_in_order = {space.name: reason for space, reason in unsaved.items() if space in scores}
    orders = {space: sorted(range(space.size), key=lambda u: -float(score[u])) for space, score in scores.items()
              if space not in unsaved}
    previous, was_training = net.width, net.training
    net.set_width(1.0)
    example = _example(net)
    before, precision = _output(net, example)
    saved = [(m.tensor, m.tensor.detach().clone()) for m in _unique(members)]
    try:
        with torch.no_grad():
            for member in _unique(members):
                order = _element_order(member.layout, orders)
                if order is not None:
                    member.tensor.copy_(member.tensor.index_select(member.dim, order.to(member.tensor.device)))
        after, _ = _output(net, example)
        report.error_at_full_width = relative_error(after, before)
        if not report.error_at_full_width <= tolerance(precision):
            raise ConversionError(f"sorting channels changed the network's output at width 1.0 (relative error "
                                  f"{report.error_at_full_width:.1e}); the network is left unsorted, please report "
                                  f"this model")
    except BaseException:
        with torch.no_grad():
            for tensor, value in saved:
                tensor.copy_(value)
        raise
    finally:
        net.set_width(previous)
        net.train(was_training)
    net.clear_width_statistics()
    net.set_width(previous)
    report.permuted = {space.name: order for space, order in orders.items()}
    return report


def model_state(net: SlimmableNet, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The network's weights as a state dict of the model it was converted from (to load sorted
    weights back into it), without the tensors torch.fx made constants of while tracing (a
    buffer reshaped in Python, Swin's ``relative_position_index.view(-1)``): the model has no
    such entries. Given the ``model``, the entries the network does not hold are completed: a
    tensor the model registers under two names (CoaT's shared position encodings) takes the
    network's value of the other name, and one the network never reads keeps the model's."""
    state = {k: v for k, v in net.model.state_dict().items() if not k.startswith("_tensor_constant")}
    if model is None:
        return state
    own = model.state_dict(keep_vars=True)
    held = {id(v): k for k, v in own.items() if k in state}
    for key, tensor in own.items():
        if key not in state:
            state[key] = state[held[id(tensor)]] if id(tensor) in held else tensor.detach()
    return state


def _members(net: SlimmableNet) -> Iterator[Member]:
    for layer in net.layers.values():
        for tensor, scored in _tensors(layer):
            for dim, layout in layer.tensor_layouts(tensor):
                yield Member(tensor, dim, layout, scored,
                             norm=scored and isinstance(layer, SlimBatchNorm) and tensor is layer.weight)
    for target, helper in net.sliced_tensors():
        tensor = _get(net.model, target)
        for dim, layout in enumerate(helper.layouts):
            if layout is not None:
                yield Member(tensor, dim, layout, isinstance(tensor, nn.Parameter))


def _along_unsaved_tensors(net: SlimmableNet, members: list[Member]) -> dict[Space, str]:
    """The spaces a tensor runs along that the network's state dict, and so its file, does not
    hold, each with the tensor's name."""
    saved = {id(t) for t in net.model.state_dict(keep_vars=True).values()}
    names = {id(t): name for name, t in net.model.named_buffers(remove_duplicate=False)}
    return {space: f"the non-persistent buffer {names.get(id(m.tensor), '?')} runs along it"
            for m in members if id(m.tensor) not in saved for space, _ in m.layout.segments}


def _tensors(layer: nn.Module) -> Iterator[tuple[torch.Tensor, bool]]:
    """A layer's own tensors (weight normalisation's sources included): parameters are scored,
    buffers (running statistics) only follow."""
    for _, p in layer.named_parameters():
        yield p, True
    for name, b in layer.named_buffers():
        if b.is_floating_point() and not name.endswith("num_batches_tracked"):
            yield b, False


def _get(root: nn.Module, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(root.get_submodule(owner) if owner else root, name)


def _unique(members: list[Member]) -> list[Member]:
    """One member per (tensor, dim): a tied weight read outside its layer is permuted once."""
    seen, out = set(), []
    for member in members:
        key = (id(member.tensor), member.dim)
        if key not in seen:
            seen.add(key)
            out.append(member)
    return out


def _units(layout: Layout, values: torch.Tensor) -> Iterator[tuple[Space, torch.Tensor]]:
    """Per segment of ``layout``: its space and ``values`` (one per element) summed per unit."""
    offset = 0
    for space, inner in layout.segments:
        chunk = values[offset: offset + space.size * inner]
        yield space, chunk.view(space.size, inner).sum(1)
        offset += space.size * inner


def _scores(net: SlimmableNet, members: list[Member], criterion: str,
            gradients: dict[int, torch.Tensor] | None) -> dict[Space, torch.Tensor]:
    totals: dict[Space, torch.Tensor] = {}
    by_bn: dict[Space, torch.Tensor] = {}
    for member in members:
        if not member.scored:
            continue
        t = member.tensor.detach().float()
        if criterion == "taylor":
            grad = gradients.get(id(member.tensor)) if gradients else None
            if grad is None:
                continue
            values = (t * grad).movedim(member.dim, 0).reshape(t.shape[member.dim], -1).sum(1).abs()
        else:
            values = t.abs().movedim(member.dim, 0).reshape(t.shape[member.dim], -1)
            values = values.pow(2).sum(1).sqrt() if criterion == "l2" else values.sum(1)
        for space, per_unit in _units(member.layout, values):
            if space.frozen:
                continue
            normalised = per_unit / per_unit.mean().clamp_min(1e-12)
            totals[space] = totals.get(space, 0) + normalised
            if member.norm:
                by_bn[space] = by_bn.get(space, 0) + normalised
    if criterion == "bn":
        totals = {space: by_bn.get(space, score) for space, score in totals.items()}  # no batch norm: l1
    return {space: score for space, score in totals.items() if not space.frozen}


def _taylor_gradients(net: SlimmableNet, data: Iterable, batches: int) -> dict[int, torch.Tensor]:
    """Sum over ``batches`` batches of each parameter's gradient of the cross-entropy at width
    1.0, in eval mode (the statistics the network was trained to)."""
    previous, was_training = net.width, net.training
    parameters = [p for p in net.parameters() if p.requires_grad]
    saved = [p.grad for p in parameters]
    for p in parameters:
        p.grad = None
    try:
        net.set_width(1.0)
        net.eval()
        device = next(net.parameters()).device
        used = 0
        for batch in data:
            if used >= batches:
                break
            inputs, labels = batch[0].to(device), batch[1].to(device)
            output = net(inputs)
            if output.ndim != 2 or labels.ndim != 1:
                raise UsconvertError("--sort-channels taylor needs a classifier and labelled data")
            nn.functional.cross_entropy(output.float(), labels).backward()
            used += 1
        if not used:
            raise UsconvertError("--sort-channels taylor got no data")
        return {id(p): p.grad.detach().float().clone() for p in parameters if p.grad is not None}
    finally:
        for p, grad in zip(parameters, saved):
            p.grad = grad
        net.set_width(previous)
        net.train(was_training)


def _element_order(layout: Layout, orders: dict[Space, list[int]]) -> torch.Tensor | None:
    """The new order of a dimension's elements, or None where nothing in it moves."""
    pieces, offset, moves = [], 0, False
    for space, inner in layout.segments:
        order = orders.get(space)
        if order is None or order == list(range(space.size)):
            units = torch.arange(space.size)
        else:
            units, moves = torch.tensor(order), True
        pieces.append((offset + units[:, None] * inner + torch.arange(inner)[None, :]).reshape(-1))
        offset += space.size * inner
    return torch.cat(pieces) if moves else None


def _example(net: SlimmableNet) -> torch.Tensor:
    p = next(net.parameters())
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, *net.input_size, generator=generator).to(p.device, torch.float64)


def _output(net: SlimmableNet, x: torch.Tensor) -> tuple[Any, torch.dtype]:
    """The network's output in float64 (its own tensors, cast for the call), so that summing
    permuted channels in another order does not pass for a change of function, and the coarsest
    floating type the call computed in: a model may compute in float32 whatever its parameters'
    type (timm's ``RmsNormFp32`` in DeepSeek's ViT)."""
    net.eval()
    tensors = {name: t.double() if t.is_floating_point() else t
               for name, t in [*net.model.named_parameters(), *net.model.named_buffers()]}
    with torch.no_grad(), _CoarsestPrecision() as precision:
        out = torch.func.functional_call(net.model, tensors, (x,))  # the slicing path: no cached module
    return out, precision.dtype


class _CoarsestPrecision(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.dtype = torch.float64

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                if torch.finfo(value.dtype).eps > torch.finfo(self.dtype).eps:
                    self.dtype = value.dtype
        return out

