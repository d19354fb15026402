"""``usconvert export``: one width as an ordinary, smaller model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsconvertError
from ..files import EXPORT_FORMATS
from .common import checked_output, console, human, print_json, reports_errors
from .options import JSON, checked


@reports_errors
def export(
    network: Path = typer.Argument(..., help="A calibrated network (.safetensors)."),
    output: Path = typer.Option(..., "-o", "--output", help="The exported model: .onnx, .pt2 or .safetensors."),
    width: Optional[float] = typer.Option(None, "--width", help="The width to export."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON of a nonuniform width: {space: ratio}, or "
                                          "a file of named ones such as usconvert search writes (with --name)."),
    name: Optional[str] = typer.Option(None, "--name", help="Which configuration of a --config file of several."),
    format: Optional[str] = typer.Option(None, "--format", help="safetensors, onnx or pt2 (default: from the "
                                                                "suffix of -o)."),
    fold_bn: bool = typer.Option(False, "--fold-bn", help="Fold batch norm into the preceding convolution (Eq. 7)."),
    as_json: bool = JSON,
) -> None:
    """Materialise one width as a standalone model (sliced weights, that width's statistics),
    verified against the slimmable network before it is written."""
    if (width is None) == (config is None):
        raise UsconvertError("give exactly one of --width and --config")
    checked_output(output, EXPORT_FORMATS if format is None else [output.suffix])
    from ..export import write
    from ..serialize import load
    net = load(network)
    if config is not None:
        from ..configs import read_config
        target = read_config(config, name)
        net.set_width(target)
    else:
        target = checked(net, [width])[0]
    with console.status(f"exporting to {output}"):
        report = write(net, output, width=target, format=format, fold_bn=fold_bn)
    summary = {"output": str(report.path), "format": report.format, "parameters": report.parameters,
               "max_relative_error": report.max_error, "folded_batch_norms": report.folded}
    if as_json:
        print_json(summary)
    else:
        console.print(f"wrote {report.path} ({report.format}, {human(report.parameters)} parameters, "
                      f"max relative error {report.max_error:.1e} against the slimmable network"
                      + (f", {report.folded} batch norms folded" if fold_bn else "") + ")")
