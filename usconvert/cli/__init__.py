"""The command-line interface: a thin layer over the Python API, one module per command.

Conventions shared by every command: ``--json`` prints the result as JSON on stdout; files are
written by ``-o/--output``, whose suffix chooses the format (repeatable where a command writes
several); widths are given by ``--widths`` as a list (0.25,0.5,1.0) or a range (0.25:1.0:0.25).
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .calibrate import calibrate
from .census import census
from .common import console
from .convert import convert
from .demo import demo
from .export import export
from .inspect import inspect
from .models import models
from .profile import profile
from .search import search
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


def _version(value: bool) -> None:
    if value:
        from ..version import __version__
        print(f"usconvert {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")) -> None:
    pass


for command in (demo, models, convert, inspect, train, calibrate, spectrum, profile, search, export, census):
    app.command()(command)

# Spellings of earlier releases, still accepted for one release: (command, old option, what the
# value must end in for the old meaning, or None) -> the new option.
DEPRECATED = {
    ("spectrum", "--json", ".json"): "-o",
    ("spectrum", "--csv", None): "-o",
    ("spectrum", "--plot", None): "-o",
    ("census", "--json", ".json"): "-o",
    ("census", "--markdown", None): "-o",
    ("census", "-j", None): "--jobs",
    ("profile", "--json", ".json"): "-o",
    ("profile", "--batch", None): "--batch-size",
}


def modernize(argv: list[str]) -> list[str]:
    """The arguments with deprecated spellings replaced, saying so on stderr once each."""
    command = next((a for a in argv if not a.startswith("-")), None)
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg, value = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        new = next((new for (cmd, old, suffix), new in DEPRECATED.items()
                    if cmd == command and arg == old and value is not None and not value.startswith("-")
                    and (suffix is None or value.endswith(suffix))), None)
        if new is None:
            out.append(arg)
            i += 1
            continue
        console.print(f"[yellow]deprecated:[/] usconvert {command} {arg} {value}: write {new} {value}"
                      + (" (the suffix chooses the format; --json now prints JSON on stdout)" if new == "-o" else "")
                      + "; the old spelling goes in the next release", soft_wrap=True)
        out += [new, value]
        i += 2
    return out


def main() -> None:
    try:
        app(args=modernize(sys.argv[1:]), prog_name="usconvert")
    except KeyboardInterrupt:  # during the imports a command starts with, before it can checkpoint
        console.print("[yellow]interrupted[/]")
        raise SystemExit(130) from None
