"""``usconvert convert``: build a model by name and write its slimmable network."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import UsconvertError
from .common import console, parse_input_size, print_json, print_summary, reports_errors
from .options import BATCH, DATA_HELP, JSON, MODEL_KWARGS, output_path, parse_model_kwargs

SORT_CRITERIA = ("none", "l1", "l2", "bn", "taylor")  # usconvert.sorting.CRITERIA, without importing torch


@reports_errors
def convert(
    name: str = typer.Argument(..., help="timm model name (mobilenetv2_100), torchvision name with a tv: prefix "
                                          "(tv:resnet18), or path/to/file.py:factory (usconvert models lists them)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the network (.safetensors)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classifier size (default: the model's); "
                                              "with weights of another class count, a new classifier."),
    model_kwargs: Optional[List[str]] = MODEL_KWARGS,
    input_size: Optional[str] = typer.Option(None, "--input-size",
                                             help="C,H,W of one example, C,T,H,W of a video clip (default: "
                                             "the model's config, else 3,224,224)."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Pretrained weights, through timm's or "
                                    "torchvision's own loading (downloaded once into their cache)."),
    pretrained_path: Optional[Path] = typer.Option(None, "--pretrained-path", help="The pretrained weights from "
                                                   "this local file instead (as timm's --pretrained-path)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A local .safetensors or .pth state dict "
                                           "of the model (read with weights_only=True)."),
    sort_channels: Optional[str] = typer.Option(None, "--sort-channels", help="Put each channel space's most "
                                                "important channels first: none, l1, l2, bn (batch-norm scales) "
                                                "or taylor (gradients, from --data). Default: l1 when weights "
                                                "were loaded, none for random weights."),
    data: str = typer.Option("digits", "--data", help="Data for --sort-channels taylor: " + DATA_HELP),
    batch_size: int = BATCH,
    divisor: int = typer.Option(8, "--divisor", help="Width divisor d: active channel counts are multiples of it."),
    min_width: float = typer.Option(0.25, "--min-width", help="Lower bound k0 of the width range [k0, 1.0]."),
    as_json: bool = JSON,
) -> None:
    """Convert a model into a universally slimmable network and save it. From a trained model
    (--pretrained or --weights), channels are sorted by importance first, so that narrow
    widths start from the best sub-network."""
    if not 0.0 < min_width <= 1.0:
        raise UsconvertError(f"--min-width must be in (0, 1], got {min_width:g}")
    if divisor < 1:
        raise UsconvertError(f"--divisor must be a positive integer, got {divisor}")
    if sort_channels is not None and sort_channels not in SORT_CRITERIA:
        raise UsconvertError(f"--sort-channels must be one of {', '.join(SORT_CRITERIA)}, got {sort_channels!r}")
    output_path(output)
    factory_kwargs = parse_model_kwargs(model_kwargs)
    size = parse_input_size(input_size, image=".py:" not in name)  # a model from a file may take any shape
    trained = pretrained or pretrained_path is not None or weights is not None
    if sort_channels not in (None, "none") and not trained:
        console.print("[yellow]warning:[/] sorting the channels of random weights means nothing: sort a trained "
                      "model (--pretrained, --pretrained-path or --weights)")
    criterion = sort_channels or ("l1" if trained else "none")
    from ..convert import convert as convert_model
    from ..models import create, default_input_size
    from ..profile import summary
    from ..serialize import save
    from ..sorting import sort_channels as sort
    with console.status(f"building and tracing {name}"):
        model, source = create(name, num_classes=num_classes, weights=weights, pretrained=pretrained,
                               pretrained_path=pretrained_path, model_kwargs=factory_kwargs, say=console.print)
        net = convert_model(model, size or default_input_size(model), divisor=divisor, min_width=min_width,
                            source=source)
    if criterion != "none":
        with console.status(f"sorting channels ({criterion})"):
            loader = None
            if criterion == "taylor":
                from ..data import calibration_loader
                from .options import splits_for
                loader = calibration_loader(splits_for(net, data, _classes(net)), batch_size)
            report = sort(net, criterion, loader)
        console.print(f"sorted the channels of {report.moved} spaces by {criterion} (width 1.0 unchanged: relative "
                      f"error {report.error_at_full_width:.0e})")
        for space, reason in report.kept_in_order.items():
            console.print(f"[yellow]kept {space} in its order:[/] {reason}, and would not keep the order when loaded")
    with console.status("measuring"):
        info = summary(net)
        info["sorted_by"] = criterion
        save(net, output)
    if as_json:
        print_json({**info, "output": str(output)})
    else:
        print_summary(info)
        console.print(f"wrote {output}")


def _classes(net) -> int:
    import torch
    net.eval()
    p = next(net.parameters())
    with torch.no_grad():
        classes = net(torch.zeros(1, *net.input_size, device=p.device, dtype=p.dtype)).shape[-1]
    net.train()
    return classes
