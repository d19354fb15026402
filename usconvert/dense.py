"""One width of a slimmable network as an ordinary module: every slimmable layer becomes its
original class again with the active (sliced, or for concatenated spaces gathered) tensors and
channel counts, batch norm carries the width's statistics, and the run-time channel ops become
plain ``split``/slicing with fixed sizes. Export writes such a copy; the eval cache runs one
whose tensors are views of the network's own; calibration runs one per width."""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.node import map_arg

from .errors import CalibrationRequiredError
from .nn import (ActiveSize, ChannelSlice, ChannelSplit, MissingStatistics, ParameterSlice, WidthStatistics,
                 original_class)
from .nn.parametrized import bake, hook_names, parametrized_names, refresh_hook_tensors


def shared_view(net: nn.Module) -> fx.GraphModule | None:
    """The network at its current width as an ordinary module whose tensors are views of the
    network's own (no copy: a write to a weight, through ``.data`` too, shows in both). None
    where that cannot be: a width that gathers channels (not a leading slice), a computed
    weight (weight normalisation), private batch-norm weights."""
    try:
        return dense_module(net, share=True)
    except _NotShareable:
        return None


class _NotShareable(Exception):
    pass


def dense_module(net: nn.Module, width: Any = None, *, share: bool = False) -> fx.GraphModule:
    """The :class:`~usconvert.net.SlimmableNet` ``net`` (this module sits below it, and knows it
    by its methods) at ``width`` (default: its current width) as an ordinary eval-mode module:
    its own tensors, or with ``share`` views of the network's (see :func:`shared_view`)."""
    previous, was_training = net.width, net.training
    try:
        # without autograd: the width's tensors (a switch's private batch-norm weights) must be
        # leaves to be copied; the width set back afterwards gets them with autograd again
        with torch.no_grad():
            if width is not None:
                net.set_width(width)
            _check_statistics(net)
            net.eval()
            refresh_hook_tensors(net.model)
            # sharing: the copy's structure is new, its tensors are the network's own
            own = _network_tensors(net)
            root = copy.deepcopy(net.model, {id(t): t for t in own} if share else None)  # with run-time ops
            storages = {_storage(t) for t in own}
            for name in net.layers:
                _materialise(root.get_submodule(name), share, storages)
            _fix_runtime_ops(root, set(net.layers), share)
            root.graph.lint()
            root.recompile()
            return root.eval()
    finally:
        net.set_width(previous)
        net.train(was_training)


def _check_statistics(net: nn.Module) -> None:
    for layer in net.batch_norm_layers().values():
        if isinstance(layer.width_statistics, MissingStatistics) and layer.track_running_stats:
            raise CalibrationRequiredError(layer.width_statistics.message)


def _own(tensor: torch.Tensor | None, share: bool) -> torch.Tensor | None:
    """The tensor for the exported module: a view when sharing, else a contiguous copy."""
    if tensor is None:
        return None
    return tensor.detach() if share else tensor.detach().clone().contiguous()


def _parameter(tensor: torch.Tensor | None, like: nn.Parameter | None, share: bool) -> nn.Parameter | None:
    if tensor is None:
        return None
    return nn.Parameter(_own(tensor, share), requires_grad=like.requires_grad if like is not None else True)


def _network_tensors(net: nn.Module) -> list[torch.Tensor]:
    """What a width runs with: the model's parameters and buffers, and the running statistics
    the network keeps per width beside them."""
    statistics = [layer.width_statistics for layer in net.batch_norm_layers().values()]
    return [*net.model.parameters(), *net.model.buffers(),
            *(t for s in statistics if isinstance(s, WidthStatistics) for t in (s.running_mean, s.running_var))]


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _materialise(module: nn.Module, share: bool, storages: set[int]) -> None:
    """Turn the copied slimmable ``module`` into its original class at its active channels.
    ``storages``: the network's memory, which a shared module's tensors must all lie in."""
    if share and (parametrized_names(module) or hook_names(module)):
        raise _NotShareable  # the weight is computed: a copy of today's value
    if share and isinstance(module, nn.RNNBase) and module.weight_ih_l0.is_cuda:
        raise _NotShareable  # cuDNN flattens an RNN's weights into a buffer of its own, rebinding them
    device = next(iter([*module.parameters(), *module.buffers()]), torch.empty(0)).device
    tensors, sizes = module.narrowed(module.selections(device))  # a computed weight: its current value
    # gathered channels, averaged outputs, private batch-norm weights: copies, not views
    if share and not all(t is None or _storage(t) in storages for t in tensors.values()):
        raise _NotShareable
    for key in module.slim_attributes:
        module.__dict__.pop(key, None)
    plain_class = bake(module, original_class(module))  # parameters in place of the computed tensors
    module.__class__ = plain_class
    for key, value in tensors.items():
        if key in module._buffers:
            module._buffers[key] = _own(value, share)
        else:
            setattr(module, key, _parameter(value, module._parameters.get(key), share))
    module.__dict__.update(sizes)


def _fix_runtime_ops(root: fx.GraphModule, layers: set[str], share: bool) -> None:
    """Replace the run-time channel ops by plain ops with the sizes of this width. ``layers``:
    the materialised layers, whose tensors read elsewhere (tied weights) are already sliced."""
    graph = root.graph
    sliced = set(layers)  # a tensor read at several places is sliced once
    for node in list(graph.nodes):
        if node.op != "call_module" or not node.target.startswith("usconvert_"):
            continue
        helper = root.get_submodule(node.target)
        if isinstance(helper, ActiveSize):
            if helper.scaled:  # computed at run time (the batch is in it): the arithmetic stays
                active, full = helper.layout.active_size(), helper.layout.size
                with graph.inserting_before(node):
                    size = graph.call_function(operator.floordiv, (
                        graph.call_function(operator.mul, (node.args[0], active)), full))
            else:
                size = helper()
            for user in list(node.users):
                user.args = map_arg(user.args, lambda n: size if n is node else n)
                user.kwargs = map_arg(user.kwargs, lambda n: size if n is node else n)
            graph.erase_node(node)
            continue
        source = node.args[0]
        if isinstance(helper, ParameterSlice):
            if source.target not in sliced and source.target.rpartition(".")[0] not in layers:
                if share and not all(layout is None or layout.is_prefix() for layout in helper.layouts):
                    raise _NotShareable
                _set_attribute(root, source.target, _own(helper(_attribute(root, source.target)), share))
                sliced.add(source.target)
            node.replace_all_uses_with(source)
        elif isinstance(helper, ChannelSplit):
            with graph.inserting_before(node):
                new = graph.call_function(torch.split, (source, [p.active_size() for p in helper.pieces]),
                                          {"dim": helper.dim})
            node.replace_all_uses_with(new)
        elif isinstance(helper, ChannelSlice):
            start = helper.before.active_size() if helper.before is not None else 0
            items = list(helper.items)
            items[helper.position] = slice(start, start + helper.piece.active_size())
            with graph.inserting_before(node):
                new = graph.call_function(operator.getitem, (source, tuple(items)))
            node.replace_all_uses_with(new)
        graph.erase_node(node)
    for name, _ in list(root.named_children()):
        if name.startswith("usconvert_"):
            delattr(root, name)


def _attribute(root: nn.Module, target: str) -> torch.Tensor:
    *path, leaf = target.split(".")
    owner = root.get_submodule(".".join(path)) if path else root
    return getattr(owner, leaf)


def _set_attribute(root: nn.Module, target: str, tensor: torch.Tensor) -> None:
    *path, leaf = target.split(".")
    owner = root.get_submodule(".".join(path)) if path else root
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(tensor, owner._parameters[leaf].requires_grad)
    else:
        owner._buffers[leaf] = tensor
