"""``export``: one width of a slimmable network as an ordinary, physically smaller model
(:mod:`usconvert.dense` builds it), to a file verified against the network. No usconvert code
runs inside the result. ``fold_bn`` folds batch norm into the preceding convolution (the
paper's Eq. 7).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils._pytree import tree_leaves

from .dense import dense_module
from .errors import CalibrationRequiredError, FileFormatError, UsconvertError, first_line
from .net import SlimmableNet, Width
from .files import EXPORT_FORMATS, EXPORT_METADATA_KEY, atomic_path
from .verify import relative_error


def export(net: SlimmableNet, width: Width | None = None, *, fold_bn: bool = False) -> fx.GraphModule:
    """The network at ``width`` (default: its current width) as a standalone eval-mode model."""
    try:
        module = dense_module(net, width)
    except CalibrationRequiredError as exc:
        raise CalibrationRequiredError(f"cannot export: {exc}") from None
    if fold_bn:
        fold_batch_norm(module)
    return module


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
    format = format or EXPORT_FORMATS.get(path.suffix)
    if format not in EXPORT_FORMATS.values():
        raise UsconvertError(f"export format must be one of {', '.join(EXPORT_FORMATS.values())} (or implied by the "
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
    about = description(net, width, fold_bn)
    with atomic_path(path) as tmp:
        if format == "safetensors":
            _write_safetensors(net, module, about, tmp)
            rebuilt = load_exported(tmp).to(p.device)
            run = rebuilt.__call__
        else:
            writer = _write_onnx if format == "onnx" else _write_pt2
            try:
                run = writer(module, examples[0], about, tmp)
            except UsconvertError:
                raise
            except Exception as exc:  # torch's exporters raise many types, with pages of advice
                raise UsconvertError(f"torch cannot export this network to {format}: {_root_cause(exc)}; nothing "
                                     f"was written") from exc
        error = 0.0
        for example in examples:
            reference = tree_leaves(_reference(net, width, example))  # ONNX gives the tensors of a dict as a list
            with torch.no_grad():
                output = [t.to(p.device) if isinstance(t, torch.Tensor) else t for t in tree_leaves(run(example))]
            error = max(error, relative_error(output, reference))
        if not error <= 1e-4:
            raise UsconvertError(f"the exported {format} model differs from the slimmable network on batches of "
                                 f"{' and '.join(map(str, VERIFY_BATCHES))} (relative error {error:.2e}); "
                                 f"nothing was written")
    return ExportReport(path, format, sum(t.numel() for t in module.parameters()), error, max(folded, 0))


VERIFY_BATCHES = (2, 3)


def _root_cause(exc: BaseException) -> str:
    """The first line of the innermost exception (the exporters wrap the cause in their own)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def _reference(net: SlimmableNet, width: Width, example: torch.Tensor) -> Any:
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


def description(net: SlimmableNet, width: Width, fold_bn: bool) -> dict:
    """What every exported file carries (JSON under ``usconvert_export``): the model and width it
    came from, and the preprocessing its inputs need (size, mean, std, interpolation, crop)."""
    from .version import __version__
    return {"usconvert": __version__, "source": net.source, "width": width, "fold_bn": fold_bn,
            "input_size": list(net.input_size), "preprocessing": net.data_config}


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` is a model exported by :func:`write` (not a slimmable network)."""
    path = Path(path)
    if path.suffix in (".onnx", ".pt2"):
        return True
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            return EXPORT_METADATA_KEY in (f.metadata() or {})
    except Exception:  # missing or unreadable: the network loader says what is wrong
        return False


def read_description(path: str | Path) -> dict:
    """The description an exported file carries, whatever its format (see :func:`description`)."""
    path = Path(path)
    try:
        if path.suffix == ".onnx":
            import onnx
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            raw = props.get(EXPORT_METADATA_KEY)
        elif path.suffix == ".pt2":
            files = {f"{EXPORT_METADATA_KEY}.json": ""}
            torch.export.load(str(path), extra_files=files)
            raw = files[f"{EXPORT_METADATA_KEY}.json"] or None
        else:
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get(EXPORT_METADATA_KEY)
    except Exception as exc:
        raise FileFormatError(f"{path} is not a readable {path.suffix.lstrip('.')} file: {exc}") from exc
    if raw is None:
        raise FileFormatError(f"{path} is not a model exported by usconvert")
    about = json.loads(raw)
    about.setdefault("preprocessing", about.get("data_config"))  # files of the first release
    return about


def _write_safetensors(net: SlimmableNet, module: nn.Module, about: dict, path: Path) -> None:
    from safetensors.torch import save_file

    from .serialize import _plain_tensors, checked_frozen
    metadata = {**about, "divisor": net.divisor, "min_width": net.min_width, "space_digest": net.space_digest(),
                "checked_frozen": checked_frozen(net)}
    if net.source is None:
        raise UsconvertError("a network converted from a model object has no source to rebuild it from; "
                             "export to onnx or pt2 instead")
    save_file(_plain_tensors(module.state_dict()), str(path), metadata={EXPORT_METADATA_KEY: json.dumps(metadata)})


def load_exported(path: str | Path) -> fx.GraphModule:
    """Rebuild a model exported to safetensors (an ordinary module of the exported widths)."""
    from safetensors.torch import load_file

    from .convert import convert
    from .models import build
    from .verify import SelfCheck
    meta = read_description(path)
    if "space_digest" not in meta:
        raise FileFormatError(f"{path} is not a model exported by usconvert to safetensors")
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


def _write_onnx(module: nn.Module, example: torch.Tensor, about: dict, path: Path
                ) -> Callable[[torch.Tensor], Any]:
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
    import onnx
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {EXPORT_METADATA_KEY: json.dumps(about)})
    onnx.save(model, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: [torch.from_numpy(a) for a in session.run(None, {name: x.detach().cpu().numpy()})]


def _write_pt2(module: nn.Module, example: torch.Tensor, about: dict, path: Path
               ) -> Callable[[torch.Tensor], Any]:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path), extra_files={f"{EXPORT_METADATA_KEY}.json": json.dumps(about)})
    return torch.export.load(str(path)).module()
