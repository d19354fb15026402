"""``export``: one width of a slimmable network as an ordinary, physically smaller model.

Every slimmable layer becomes its original class again with the active (sliced, or for
concatenated spaces gathered) weights and its channel counts; batch norm carries the width's
statistics; the run-time channel ops become plain ``split``/slicing with fixed sizes. No
usconvert code runs inside the result. ``fold_bn`` folds batch norm into the preceding
convolution (the paper's Eq. 7).
"""

from __future__ import annotations

import copy
import json
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import fx, nn
from torch.fx.node import map_arg
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import CalibrationRequiredError, FileFormatError, UsconvertError
from .net import SlimmableNet, Width
from .nn import (ActiveSize, ChannelSlice, ChannelSplit, MissingStatistics, ParameterSlice, SlimBatchNorm,
                 SlimConv, SlimGroupNorm, SlimLayerNorm, SlimLinear, WidthStatistics, original_class)
from .nn.parametrized import bake, detach_hook_tensors, hook_names, parametrized_names
from .serialize import atomic_path
from .verify import relative_error


def export(net: SlimmableNet, width: Width | None = None, *, fold_bn: bool = False) -> fx.GraphModule:
    """The network at ``width`` (default: its current width) as a standalone eval-mode model."""
    return _build(net, width, fold_bn=fold_bn, share=False)


def shared_view(net: SlimmableNet) -> fx.GraphModule | None:
    """The network at its current width as an ordinary module whose tensors are views of the
    network's own (no copy: a write to a weight, through ``.data`` too, shows in both). None
    where that cannot be: a width that gathers channels (not a leading slice), a computed
    weight (weight normalisation), private batch-norm weights."""
    try:
        return _build(net, None, fold_bn=False, share=True)
    except _NotShareable:
        return None


class _NotShareable(Exception):
    pass


def _build(net: SlimmableNet, width: Width | None, *, fold_bn: bool, share: bool) -> fx.GraphModule:
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
            if fold_bn:
                fold_batch_norm(root)
            return root.eval()
    finally:
        net.set_width(previous)
        net.train(was_training)


def _check_statistics(net: SlimmableNet) -> None:
    for layer in net.batch_norm_layers().values():
        if isinstance(layer.width_statistics, MissingStatistics) and layer.track_running_stats:
            raise CalibrationRequiredError(f"cannot export: {layer.width_statistics.message}")


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
        if isinstance(layer, SlimConv):
            out_selection = len(out_channels) if _leading(out_channels) else _gather(out_channels, share, weight.device)
            tensors.update(SlimConv._per_output_tensors(module, out_selection))  # module may be baked already
            attributes.update(in_channels=len(in_channels), out_channels=len(out_channels),
                              groups=len(in_channels) // module.weight.shape[1] if grouped else 1)
        else:
            attributes.update(in_features=len(in_channels), out_features=len(out_channels))
        for key in ("in_layout", "out_layout"):
            module.__dict__.pop(key, None)
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
        elif isinstance(layer, SlimLayerNorm):
            attributes["normalized_shape"] = (len(active),)
        for key in ("channel_layout", "channel_dim"):
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


def fold_batch_norm(root: fx.GraphModule) -> int:
    """Fold each plain ``BatchNorm2d`` that only follows a plain convolution into it (Eq. 7),
    per call site: a convolution also called elsewhere (before another norm, or none) keeps
    its own weights there, and this call gets a folded copy. Returns the number of folded
    batch norms."""
    modules = dict(root.named_modules())
    calls: dict[str, int] = {}
    for node in root.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in list(root.graph.nodes):
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.BatchNorm2d or calls[node.target] != 1:
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and type(modules.get(source.target)) is nn.Conv2d):
            continue
        conv, bn = modules[source.target], modules[node.target]
        fused = fuse_conv_bn_eval(copy.deepcopy(conv).eval(), bn.eval())
        if calls[source.target] == 1:
            *path, leaf = source.target.split(".")
            setattr(root.get_submodule(".".join(path)) if path else root, leaf, fused)
        else:  # the module is called elsewhere too: this call site gets a folded copy of its own
            name = f"{source.target.replace('.', '_')}_folded_{node.target.replace('.', '_')}"
            root.add_submodule(name, fused)
            source.target = name
        node.replace_all_uses_with(source)
        root.graph.erase_node(node)
        folded += 1
    root.graph.eliminate_dead_code()
    root.delete_all_unused_submodules()
    root.recompile()
    return folded


FORMATS = {".safetensors": "safetensors", ".onnx": "onnx", ".pt2": "pt2"}
EXPORT_METADATA_KEY = "usconvert_export"


@dataclass
class ExportReport:
    path: Path
    format: str
    parameters: int
    max_error: float  # against the slimmable network, relative to the output's scale
    folded: int = 0


def write(net: SlimmableNet, path: str | Path, *, width: Width | None = None, format: str | None = None,
          fold_bn: bool = False) -> ExportReport:
    """Export one width to a file and verify it: onnx through onnxruntime, pt2 through
    ``torch.export.load``, safetensors by rebuilding it with :func:`load_exported`."""
    path = Path(path)
    format = format or FORMATS.get(path.suffix)
    if format not in FORMATS.values():
        raise UsconvertError(f"export format must be one of {', '.join(FORMATS.values())} (or implied by the "
                             f"file suffix), got {format or path.suffix!r}")
    width = net.width if width is None else width
    module = export(net, width, fold_bn=fold_bn)
    folded = sum(1 for m in net.batch_norm_layers()) - sum(
        1 for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    p = next(net.parameters())
    generator = torch.Generator(p.device).manual_seed(0)
    # the traced batch and another: sizes baked from the batch show only at the other
    examples = [torch.randn(batch, *net.input_size, device=p.device, dtype=p.dtype, generator=generator)
                for batch in VERIFY_BATCHES]
    with atomic_path(path) as tmp:
        if format == "safetensors":
            _write_safetensors(net, module, width, fold_bn, tmp)
            rebuilt = load_exported(tmp).to(p.device)
            run = rebuilt.__call__
        elif format == "onnx":
            run = _write_onnx(module, examples[0], tmp)
        else:
            run = _write_pt2(module, examples[0], tmp)
        error = 0.0
        for example in examples:
            reference = _reference(net, width, example)
            with torch.no_grad():
                output = torch.as_tensor(run(example)).to(reference.device, reference.dtype)
            error = max(error, relative_error(output, reference) if output.shape == reference.shape else math.inf)
        if not error <= 1e-4:
            raise UsconvertError(f"the exported {format} model differs from the slimmable network on batches of "
                                 f"{' and '.join(map(str, VERIFY_BATCHES))} (relative error {error:.2e}); "
                                 f"nothing was written")
    return ExportReport(path, format, sum(t.numel() for t in module.parameters()), error, max(folded, 0))


VERIFY_BATCHES = (2, 3)


def _reference(net: SlimmableNet, width: Width, example: torch.Tensor) -> torch.Tensor:
    previous, was_training, cache = net.width, net.training, net.eval_cache
    try:
        net.set_width(width)
        net.eval()
        net.eval_cache = False  # the slimmable path itself, not an export of it
        with torch.no_grad():
            return net(example)
    finally:
        net.eval_cache = cache
        net.set_width(previous)
        net.train(was_training)


def _write_safetensors(net: SlimmableNet, module: nn.Module, width: Width, fold_bn: bool, path: Path) -> None:
    from safetensors.torch import save_file

    from .serialize import _plain_tensors, checked_frozen
    metadata = {"source": net.source, "input_size": list(net.input_size), "divisor": net.divisor,
                "min_width": net.min_width, "space_digest": net.space_digest(), "checked_frozen": checked_frozen(net),
                "width": width, "fold_bn": fold_bn, "data_config": net.data_config}
    if net.source is None:
        raise UsconvertError("a network converted from a model object has no source to rebuild it from; "
                             "export to onnx or pt2 instead")
    save_file(_plain_tensors(module.state_dict()), str(path), metadata={EXPORT_METADATA_KEY: json.dumps(metadata)})


def load_exported(path: str | Path) -> fx.GraphModule:
    """Rebuild a model exported to safetensors (an ordinary module of the exported widths)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .convert import convert
    from .verify import SelfCheck
    from .models import build
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(EXPORT_METADATA_KEY)
    except Exception as exc:
        raise FileFormatError(f"{path} is not a readable safetensors file: {exc}") from exc
    if raw is None:
        raise FileFormatError(f"{path} is not a model exported by usconvert")
    meta = json.loads(raw)
    net = convert(build(meta["source"]), tuple(meta["input_size"]), divisor=meta["divisor"],
                  min_width=meta["min_width"], source=meta["source"], check=False)
    net.self_check = SelfCheck(frozen=dict(meta.get("checked_frozen", {})))  # as found when converted
    net.freeze_spaces(net.self_check.frozen)
    if net.space_digest() != meta["space_digest"]:
        raise FileFormatError(f"the model rebuilt for {path} has other channel spaces than the exported one")
    with net.sliced_statistics():  # the skeleton only: the file's statistics are loaded below
        module = export(net, meta["width"], fold_bn=meta["fold_bn"])
    module.load_state_dict(load_file(str(path)), strict=True)
    return module


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        import onnxruntime
    except ImportError:
        raise UsconvertError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'usconvert[onnx]'"
                             ) from None
    import warnings
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamic_shapes=({0: batch},), dynamo=True,
                                    external_data=False, verbose=False)
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])


def _write_pt2(module: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return torch.export.load(str(path)).module()
