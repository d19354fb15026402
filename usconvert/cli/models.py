"""``usconvert models``: the model names ``convert`` takes."""

from __future__ import annotations

from typing import Optional

import typer

from .common import console, print_json, reports_errors, stdout
from .options import JSON


@reports_errors
def models(
    pattern: Optional[str] = typer.Argument(None, help="A glob on names, such as 'mobilenetv3*' or 'tv:resnet*'."),
    source: str = typer.Option("all", "--source", help="timm, torchvision or all."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Only models with pretrained weights (timm's "
                                                                "names then carry their weight tag)."),
    as_json: bool = JSON,
) -> None:
    """List the timm and torchvision (tv:NAME) models that convert NAME can build."""
    from ..models import list_models
    names = list_models(source, pattern, pretrained=pretrained)
    if as_json:
        print_json(names)
        return
    for name in names:
        stdout.print(name, highlight=False, soft_wrap=True)
    if not names:
        console.print(f"no model matches {pattern!r}" if pattern else "no model")
        raise typer.Exit(1)
