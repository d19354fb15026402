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
             "four idx files elsewhere), fake:N, or an ImageFolder directory with train/ and val/ (for a video "
             "network: class folders of clips, video files or folders of frames).")
DATA = typer.Option("digits", "--data", help=DATA_HELP)
BATCH = typer.Option(64, "-b", "--batch-size", help="Images per batch (per process under torchrun).")
WORKERS = typer.Option(0, "-j", "--workers", help="Data loader processes.")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda.")
JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout (and nothing else there).")


MODEL_KWARGS = typer.Option(None, "--model-kwargs", help="Arguments of the model's factory, KEY=VALUE, comma-"
                            "separated or repeated (as timm's --model-kwargs): img_size=32,patch_size=4.")


def parse_model_kwargs(items: Optional[List[str]]) -> dict:
    """``img_size=32,patch_size=4`` -> ``{"img_size": 32, "patch_size": 4}``; values are Python
    literals where they parse as one (as timm reads them), else strings."""
    import ast
    from ..errors import UsconvertError
    kwargs: dict = {}
    for pair in (p.strip() for item in items or [] for p in item.split(",") if p.strip()):
        key, sep, text = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsconvertError(f"--model-kwargs takes KEY=VALUE pairs, got {pair!r}")
        try:
            kwargs[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = text.strip()
    return kwargs


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
