"""Options several commands share, and loading what they need. Nothing heavy is imported at
module level: ``--help`` and argument errors must answer without importing torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from ..files import NETWORK_SUFFIX
from .common import checked_output

if TYPE_CHECKING:
    from ..data import Splits
    from ..net import SlimmableNet

DATA_HELP = ("digits (embedded), fashion-mnist (Debian's dataset-fashion-mnist; fashion-mnist:DIR for the same "
             "four idx files elsewhere), fake:N, or an ImageFolder directory with train/ and val/.")
DATA = typer.Option("digits", "--data", help=DATA_HELP)
BATCH = typer.Option(64, "-b", "--batch-size", help="Images per batch (per process under torchrun).")
WORKERS = typer.Option(0, "-j", "--workers", help="Data loader processes.")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda.")
JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout (and nothing else there).")


def outputs(suffixes: str) -> typer.models.OptionInfo:
    """Repeatable ``-o``: the files to write, each in the format its suffix names."""
    return typer.Option(None, "-o", "--output", help=f"A file to write, repeatable; its suffix chooses the format "
                                                     f"({suffixes}).")


Outputs = Optional[List[Path]]


def widths_or_default(text: Optional[str], net: "SlimmableNet", default_step: float) -> list[float]:
    from ..width import parse_widths
    return checked(net, parse_widths(text or f"{net.min_width}:1.0:{default_step}"))


def checked(net: "SlimmableNet", widths: list[float]) -> list[float]:
    """The widths, after checking each against the network's range (before any work starts)."""
    previous = net.width
    for width in widths:
        net.set_width(width)
    net.set_width(previous)
    return widths


def splits_for(net: "SlimmableNet", data: str, classes: int | None = None, seed: int = 0) -> "Splits":
    from ..data import DataConfig, load_data
    return load_data(data, net.input_size, DataConfig(**(net.data_config or {})), num_classes=classes or 10,
                     seed=seed)


def output_path(path: Path) -> Path:
    """``-o`` of a command that writes a network."""
    return checked_output(path, [NETWORK_SUFFIX])
