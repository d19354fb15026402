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
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.fx.node import map_arg
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import CalibrationRequiredError, FileFormatError, UsconvertError
from .net import SlimmableNet, Width
from .nn import (ActiveSize, ChannelSlice, ChannelSplit, MissingStatistics, ParameterSlice, SlimBatchNorm,
                 SlimConv, SlimGroupNorm, SlimLayerNorm, SlimLinear, WidthStatistics, original_class)
from .nn.parametrized import bake, detach_hook_tensors
from .serialize import atomic_path
from .verify import relative_error


def export(net: SlimmableNet, width: Width | None = None, *, fold_bn: bool = False) -> fx.GraphModule:
    """The network at ``width`` (default: its current width) as a standalone eval-mode model."""
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
            root = copy.deepcopy(net.model)  # the eval graph, with layers and run-time ops
            for name, layer in net.layers.items():
                _materialise(root.get_submodule(name), layer)
            _fix_runtime_ops(root)
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


def _parameter(tensor: torch.Tensor | None, like: nn.Parameter | None) -> nn.Parameter | None:
    if tensor is None:
        return None
    return nn.Parameter(tensor.detach().clone().contiguous(), requires_grad=like.requires_grad if like is not None
                        else True)


def _index(selection: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(selection, dtype=torch.long, device=device)


def _materialise(module: nn.Module, layer: nn.Module) -> None:
    """Turn the copied slimmable ``module`` into its original class at the active channels of
    ``layer`` (the live network's layer, whose statistics and selections are current)."""
    plain_class = bake(module, original_class(module))  # weight normalisation: its current weight
    channels = layer.active_channels()
    device = module.weight.device if getattr(module, "weight", None) is not None else torch.device("cpu")
    tensors: dict[str, torch.Tensor | None] = {}
    attributes: dict[str, Any] = {}
    if isinstance(layer, (SlimConv, SlimLinear)):
        out_index, in_index = _index(channels["out"], device), _index(channels["in"], device)
        weight = module.weight.index_select(0, out_index)
        grouped = isinstance(layer, SlimConv) and layer.groups > 1
        if not grouped:
            weight = weight.index_select(1, in_index)
        tensors["weight"] = weight
        tensors["bias"] = module.bias.index_select(0, out_index) if module.bias is not None else None
        if isinstance(layer, SlimConv):
            tensors.update(SlimConv._per_output_tensors(module, out_index))  # module may be baked already
            attributes.update(in_channels=len(channels["in"]), out_channels=len(channels["out"]),
                              groups=len(channels["in"]) // module.weight.shape[1] if grouped else 1)
        else:
            attributes.update(in_features=len(channels["in"]), out_features=len(channels["out"]))
        for key in ("in_layout", "out_layout"):
            module.__dict__.pop(key, None)
    else:
        index = _index(channels["channel"], device)
        for key in ("weight", "bias"):
            if getattr(module, key, None) is not None:
                tensors[key] = getattr(module, key).index_select(0, index)
        if getattr(layer, "width_affine", None) is not None:  # switchable batch norm
            tensors.update(zip(("weight", "bias"), layer.width_affine))
        if isinstance(layer, SlimBatchNorm):
            stats = layer.width_statistics
            if isinstance(stats, WidthStatistics):
                module.running_mean = stats.running_mean.detach().clone()
                module.running_var = stats.running_var.detach().clone()
            elif module.running_mean is not None:
                module.running_mean = module.running_mean.index_select(0, index)
                module.running_var = module.running_var.index_select(0, index)
            attributes["num_features"] = len(index)
            module.__dict__.pop("width_statistics", None)
            module.__dict__.pop("width_affine", None)
        elif isinstance(layer, SlimGroupNorm):
            per_group = layer.num_channels // layer.num_groups
            attributes.update(num_channels=len(index), num_groups=len(index) // per_group if layer.num_groups > 1 else 1)
        elif isinstance(layer, SlimLayerNorm):
            attributes["normalized_shape"] = (len(index),)
        for key in ("channel_layout", "channel_dim"):
            module.__dict__.pop(key, None)
    module.__class__ = plain_class
    for key, value in tensors.items():
        setattr(module, key, _parameter(value, module._parameters.get(key)))
    module.__dict__.update(attributes)


def _fix_runtime_ops(root: fx.GraphModule) -> None:
    """Replace the run-time channel ops by plain ops with the sizes of this width."""
    graph = root.graph
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
            sliced = helper(_attribute(root, source.target))
            _set_attribute(root, source.target, sliced)
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
        owner._parameters[leaf] = nn.Parameter(tensor.detach().clone(), owner._parameters[leaf].requires_grad)
    else:
        owner._buffers[leaf] = tensor.detach().clone()


def fold_batch_norm(root: fx.GraphModule) -> int:
    """Fold each plain ``BatchNorm2d`` that only follows a plain convolution into it (Eq. 7).
    Returns the number of folded layers."""
    modules = dict(root.named_modules())
    folded = 0
    for node in list(root.graph.nodes):
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.BatchNorm2d:
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and type(modules.get(source.target)) is nn.Conv2d):
            continue
        conv, bn = modules[source.target], modules[node.target]
        fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
        *path, leaf = source.target.split(".")
        setattr(root.get_submodule(".".join(path)) if path else root, leaf, fused)
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
    example = torch.randn(2, *net.input_size, device=p.device, dtype=p.dtype,
                          generator=torch.Generator(p.device).manual_seed(0))
    reference = _reference(net, width, example)
    with atomic_path(path) as tmp:
        if format == "safetensors":
            _write_safetensors(net, module, width, fold_bn, tmp)
            rebuilt = load_exported(tmp)
            with torch.no_grad():
                output = rebuilt.to(p.device)(example)
        elif format == "onnx":
            output = _write_onnx(module, example, tmp)
        else:
            output = _write_pt2(module, example, tmp)
    error = relative_error(torch.as_tensor(output).to(reference.device, reference.dtype), reference)
    if error > 1e-4:
        path.unlink(missing_ok=True)
        raise UsconvertError(f"the exported {format} model differs from the slimmable network "
                             f"(relative error {error:.2e}); nothing was written")
    return ExportReport(path, format, sum(t.numel() for t in module.parameters()), error, max(folded, 0))


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

    from .serialize import _plain_tensors
    metadata = {"source": net.source, "input_size": list(net.input_size), "divisor": net.divisor,
                "min_width": net.min_width, "space_digest": net.space_digest(), "width": width, "fold_bn": fold_bn,
                "data_config": net.data_config}
    if net.source is None:
        raise UsconvertError("a network converted from a model object has no source to rebuild it from; "
                             "export to onnx or pt2 instead")
    save_file(_plain_tensors(module.state_dict()), str(path), metadata={EXPORT_METADATA_KEY: json.dumps(metadata)})


def load_exported(path: str | Path) -> fx.GraphModule:
    """Rebuild a model exported to safetensors (an ordinary module of the exported widths)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .convert import convert
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
                  min_width=meta["min_width"], source=meta["source"])
    if net.space_digest() != meta["space_digest"]:
        raise FileFormatError(f"the model rebuilt for {path} has other channel spaces than the exported one")
    with net.sliced_statistics():  # the skeleton only: the file's statistics are loaded below
        module = export(net, meta["width"], fold_bn=meta["fold_bn"])
    module.load_state_dict(load_file(str(path)), strict=True)
    return module


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> torch.Tensor:
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
    return torch.from_numpy(session.run(None, {name: example.detach().cpu().numpy()})[0])


def _write_pt2(module: nn.Module, example: torch.Tensor, path: Path) -> torch.Tensor:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    with torch.no_grad():
        return torch.export.load(str(path)).module()(example)
