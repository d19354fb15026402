"""``usconvert inspect``: what a saved network can do."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, print_json, print_summary, reports_errors
from .options import JSON


@reports_errors
def inspect(
    path: Path = typer.Argument(..., help="A network written by usconvert (.safetensors)."),
    as_json: bool = JSON,
    all_spaces: bool = typer.Option(False, "--all", help="List every space (a network of more than 40 lists "
                                                         "only its frozen ones by default)."),
) -> None:
    """Show the channel spaces (slimmable or frozen, with reasons) and multiply-adds at 1.0 and
    at the minimum width."""
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
