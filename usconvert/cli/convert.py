"""``usconvert convert``: build a model by name and write its slimmable network."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsconvertError
from .common import console, parse_input_size, print_json, print_summary, reports_errors
from .options import JSON, output_path


@reports_errors
def convert(
    name: str = typer.Argument(..., help="timm model name (mobilenetv2_100), torchvision name with a tv: prefix "
                                          "(tv:resnet18), or path/to/file.py:factory."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the network (.safetensors)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classifier size (default: the model's)."),
    input_size: Optional[str] = typer.Option(None, "--input-size",
                                             help="C,H,W of one example (default: timm's config, else 3,224,224)."),
    weights: Optional[Path] = typer.Option(None, "--weights",
                                           help="Local .safetensors or .pth state dict; nothing is downloaded."),
    divisor: int = typer.Option(8, "--divisor", help="Width divisor d: active channel counts are multiples of it."),
    min_width: float = typer.Option(0.25, "--min-width", help="Lower bound k0 of the width range [k0, 1.0]."),
    as_json: bool = JSON,
) -> None:
    """Convert a model into a universally slimmable network and save it."""
    if not 0.0 < min_width <= 1.0:
        raise UsconvertError(f"--min-width must be in (0, 1], got {min_width:g}")
    if divisor < 1:
        raise UsconvertError(f"--divisor must be a positive integer, got {divisor}")
    output_path(output)
    size = parse_input_size(input_size, image=".py:" not in name)  # a model from a file may take any shape
    from ..convert import convert as convert_model
    from ..models import create, default_input_size
    from ..profile import summary
    from ..serialize import save
    with console.status(f"building and tracing {name}"):
        model, source = create(name, num_classes=num_classes, weights=weights)
        net = convert_model(model, size or default_input_size(model), divisor=divisor, min_width=min_width,
                            source=source)
        info = summary(net)
        save(net, output)
    if as_json:
        print_json({**info, "output": str(output)})
    else:
        print_summary(info)
        console.print(f"wrote {output}")
