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
from .nn import (ActiveSize, ChannelSlice, ChannelSplit, MissingStatistics, ParameterSlice, SlimBatchNorm,
                 SlimConv, SlimGroupNorm, SlimLayerNorm, SlimLinear, SlimRecurrent, WidthStatistics, original_class)
from .nn.parametrized import bake, detach_hook_tensors, hook_names, parametrized_names


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
            detach_hook_tensors(net.model)
            # sharing: the copy's structure is new, its tensors are the network's own
            memo = {id(t): t for t in [*net.model.parameters(), *net.model.buffers()]} if share else None
            root = copy.deepcopy(net.model, memo)  # the eval graph, with layers and run-time ops
            for name, layer in net.layers.items():
                _materialise(root.get_submodule(name), layer, share)
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


def _select(tensor: torch.Tensor | None, dim: int, channels: list[int], share: bool) -> torch.Tensor | None:
    """``channels`` of ``tensor`` along ``dim``: a view for leading channels, else a gather."""
    if tensor is None:
        return None
    if _leading(channels):
        return tensor.narrow(dim, 0, len(channels))
    return tensor.index_select(dim, _gather(channels, share, tensor.device))


def _leading(channels: list[int]) -> bool:
    return channels == list(range(len(channels)))


def _materialise(module: nn.Module, layer: nn.Module, share: bool) -> None:
    """Turn the copied slimmable ``module`` into its original class at the active channels of
    ``layer`` (the live network's layer, whose statistics and selections are current)."""
    if share and (parametrized_names(module) or hook_names(module)):
        raise _NotShareable  # the weight is computed: a copy of today's value
    plain_class = bake(module, original_class(module))  # weight normalisation: its current weight
    channels = layer.active_channels()
    tensors: dict[str, torch.Tensor | None] = {}
    attributes: dict[str, Any] = {}
    if isinstance(layer, (SlimConv, SlimLinear)):
        out_channels, in_channels = channels["out"], channels["in"]
        weight = _select(module.weight, 0, out_channels, share)
        grouped = isinstance(layer, SlimConv) and layer.groups > 1
        if not grouped:
            weight = _select(weight, 1, in_channels, share)
        tensors["weight"] = weight
        tensors["bias"] = _select(module.bias, 0, out_channels, share)
        scale = layer.output_scale(len(in_channels))
        if scale != 1.0:  # output averaging, baked into the width's weights
            if share:
                raise _NotShareable
            tensors = {key: t * scale if t is not None else None for key, t in tensors.items()}
        if isinstance(layer, SlimConv):
            out_selection = len(out_channels) if _leading(out_channels) else _gather(out_channels, share, weight.device)
            tensors.update(SlimConv._per_output_tensors(module, out_selection))  # module may be baked already
            attributes.update(in_channels=len(in_channels), out_channels=len(out_channels),
                              groups=len(in_channels) // module.weight.shape[1] if grouped else 1)
        else:
            attributes.update(in_features=len(in_channels), out_features=len(out_channels))
        for key in ("in_layout", "out_layout", "output_averaging"):
            module.__dict__.pop(key, None)
    elif isinstance(layer, SlimRecurrent):
        if share and module.weight_ih_l0.is_cuda:
            raise _NotShareable  # cuDNN flattens an RNN's weights into a buffer of its own, rebinding them
        for key in layer.input_weight_names:
            tensors[key] = _select(getattr(module, key), 1, channels["in"], share)
        attributes["input_size"] = len(channels["in"])
        module.__dict__.pop("in_layout", None)
    else:
        active = channels["channel"]
        for key in ("weight", "bias"):
            if getattr(module, key, None) is not None:
                tensors[key] = _select(getattr(module, key), 0, active, share)
        if getattr(layer, "width_affine", None) is not None:  # switchable batch norm
            if share:
                raise _NotShareable  # private weights may be gathered copies
            tensors.update(zip(("weight", "bias"), layer.width_affine))
        if isinstance(layer, SlimBatchNorm):
            stats = layer.width_statistics
            if isinstance(stats, WidthStatistics):
                module.running_mean = _own(stats.running_mean, share)
                module.running_var = _own(stats.running_var, share)
            elif module.running_mean is not None:
                module.running_mean = _own(_select(module.running_mean, 0, active, share), share)
                module.running_var = _own(_select(module.running_var, 0, active, share), share)
            attributes["num_features"] = len(active)
            module.__dict__.pop("width_statistics", None)
            module.__dict__.pop("width_affine", None)
        elif isinstance(layer, SlimGroupNorm):
            per_group = layer.num_channels // layer.num_groups
            attributes.update(num_channels=len(active),
                              num_groups=len(active) // per_group if layer.num_groups > 1 else 1)
        elif isinstance(layer, SlimLayerNorm) and "normalized_shape" in vars(module):
            attributes["normalized_shape"] = (len(active),)
        for key in ("channel_layout", "channel_layout_dim"):
            module.__dict__.pop(key, None)
    module.__class__ = plain_class
    for key, value in tensors.items():
        setattr(module, key, _parameter(value, module._parameters.get(key), share))
    module.__dict__.update(attributes)


def _gather(channels: list[int], share: bool, device: torch.device) -> torch.Tensor:
    if share:
        raise _NotShareable
    return torch.tensor(channels, dtype=torch.long, device=device)


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
