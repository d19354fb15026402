"""Options several commands share, and loading what they need."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..data import DataConfig, Splits, load_data
from ..net import SlimmableNet
from ..width import parse_widths

DATA = typer.Option("digits", "--data", help="digits (embedded), fake:N, or an ImageFolder directory with train/ "
                                             "and val/.")
BATCH = typer.Option(64, "-b", "--batch-size", help="Images per batch (per process under torchrun).")
WORKERS = typer.Option(0, "-j", "--workers", help="Data loader processes.")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda.")


def widths_or_default(text: Optional[str], net: SlimmableNet, default_step: float) -> list[float]:
    return checked(net, parse_widths(text or f"{net.min_width}:1.0:{default_step}"))


def checked(net: SlimmableNet, widths: list[float]) -> list[float]:
    """The widths, after checking each against the network's range (before any work starts)."""
    previous = net.width
    for width in widths:
        net.set_width(width)
    net.set_width(previous)
    return widths


def splits_for(net: SlimmableNet, data: str, classes: int | None = None, seed: int = 0) -> Splits:
    return load_data(data, net.input_size, DataConfig(**(net.data_config or {})), num_classes=classes or 10,
                     seed=seed)


def output_path(path: Path) -> Path:
    from ..errors import UsconvertError
    if path.suffix != ".safetensors":
        raise UsconvertError(f"-o must name a .safetensors file, got {path}")
    return path
