"""``usconvert inspect``: what a saved network can do, or what an exported model is."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, human, print_json, print_summary, reports_errors, stdout
from .options import JSON


@reports_errors
def inspect(
    path: Path = typer.Argument(..., help="A network written by usconvert (.safetensors), or a model exported from "
                                          "one (.safetensors, .onnx, .pt2)."),
    as_json: bool = JSON,
    all_spaces: bool = typer.Option(False, "--all", help="List every space (a network of more than 40 lists "
                                                         "only its frozen ones by default)."),
) -> None:
    """Show the channel spaces (slimmable or frozen, with reasons), multiply-adds at 1.0 and at
    the minimum width, and the calibrated widths; for an exported model, the width it holds,
    where it came from, its parameters and the preprocessing its inputs need."""
    from ..export import is_exported, read_description
    if is_exported(path):
        about = read_description(path)
        about["parameters"] = _exported_parameters(path)
        if as_json:
            print_json(about)
        else:
            _print_exported(path, about)
        return
    from ..profile import summary
    from ..serialize import load
    with console.status(f"loading {path}"):
        net = load(path)
        info = summary(net)
    info["calibrated_widths"] = sorted(net.statistics.labels().values())
    if as_json:
        print_json(info)
    else:
        print_summary(info, all_spaces=all_spaces)


def _exported_parameters(path: Path) -> int:
    if path.suffix == ".onnx":
        import math

        import onnx
        return sum(math.prod(t.dims) for t in onnx.load(str(path)).graph.initializer)
    if path.suffix == ".pt2":
        import torch
        return sum(t.numel() for t in torch.export.load(str(path)).parameters())  # type: ignore[attr-defined]
    import math

    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:  # parameters, not batch-norm statistics
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def _print_exported(path: Path, about: dict) -> None:
    source = about.get("source") or {}
    name = source.get("name") or f"{source.get('path')}:{source.get('factory')}"
    width = about["width"]
    width = f"{width:g}" if isinstance(width, (int, float)) else f"nonuniform ({len(width)} spaces)"
    folded = " with batch norm folded" if about.get("fold_bn") else ""
    stdout.print(f"[bold]{path.name}[/]: {source.get('kind', 'module')} {name} exported at width {width}{folded} "
                 f"by usconvert {about.get('usconvert', '')}")
    stdout.print(f"parameters {human(about['parameters'])}; input {'x'.join(map(str, about['input_size']))}")
    pre = about.get("preprocessing") or {}
    if pre:
        rate = f", {pre['frame_rate']:g} frames a second" if pre.get("frame_rate") else ""
        if pre.get("clips_per_video", 1) > 1:
            rate += f", the mean of {pre['clips_per_video']} clips per video"
        stdout.print(f"preprocessing: resize ({pre.get('interpolation')}), center crop {pre.get('crop_pct')}, "
                     f"mean {tuple(pre.get('mean', ()))}, std {tuple(pre.get('std', ()))}{rate}")
    loader = {".onnx": "onnxruntime.InferenceSession(path)", ".pt2": "torch.export.load(path).module()"}
    stdout.print(f"load it with {loader.get(path.suffix, 'usconvert.load_exported(path)')}")
