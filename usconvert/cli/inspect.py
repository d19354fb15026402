"""``usconvert inspect``: what a saved network can do."""

from __future__ import annotations

from pathlib import Path

import typer

from ..profile import summary
from ..serialize import load
from .common import console, print_json, print_summary, reports_errors


@reports_errors
def inspect(
    path: Path = typer.Argument(..., help="A network written by usconvert (.safetensors)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    all_spaces: bool = typer.Option(False, "--all", help="List every space, not only the frozen ones."),
) -> None:
    """Show the channel spaces (slimmable or frozen, with reasons) and multiply-adds at 1.0 and
    at the minimum width."""
    with console.status(f"loading {path}"):
        net = load(path)
        info = summary(net)
    info["calibrated_widths"] = sorted(net.statistics.labels().values())
    if as_json:
        print_json(info)
    else:
        print_summary(info, all_spaces=all_spaces)
