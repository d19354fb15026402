"""The command-line interface: a thin layer over the Python API, one module per command."""

from __future__ import annotations

import typer

from .calibrate import calibrate
from .census import census
from .convert import convert
from .demo import demo
from .export import export
from .inspect import inspect
from .profile import profile
from .spectrum import spectrum
from .train import train

app = typer.Typer(
    name="usconvert",
    help="Turn timm and torchvision models into universally slimmable networks (US-Nets).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command()(demo)
app.command()(convert)
app.command()(inspect)
app.command()(train)
app.command()(calibrate)
app.command()(spectrum)
app.command()(profile)
app.command()(export)
app.command()(census)


def main() -> None:
    app()
