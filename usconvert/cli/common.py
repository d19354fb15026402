"""What the commands share: the console, error reporting, argument parsing, the summary table."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.table import Table

from ..errors import TrainingInterrupted, UsconvertError

console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


def reports_errors(command: Callable) -> Callable:
    """Turn a usconvert error into one line on stderr and exit code 2; Ctrl-C into exit 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TrainingInterrupted as exc:
            console.print(f"[yellow]interrupted:[/] {exc}", soft_wrap=True)
            raise typer.Exit(130) from None
        except UsconvertError as exc:
            console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def parse_input_size(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        size = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise UsconvertError(f"--input-size must look like 3,224,224, got {text!r}") from None
    if not size or any(s < 1 for s in size):
        raise UsconvertError(f"--input-size must be positive, got {text!r}")
    return size


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def print_summary(info: dict[str, Any], *, all_spaces: bool = False) -> None:
    source = info["source"] or {}
    name = source.get("name") or f"{source.get('path')}:{source.get('factory')}"
    size = "x".join(map(str, info["input_size"]))
    stdout.print(f"[bold]{source.get('kind', 'module')} {name}[/]  input {size}  divisor {info['divisor']}  "
                 f"min width {info['min_width']:g}")
    table = Table(show_edge=False, pad_edge=False)
    for column in ("space", "channels", "step", f"at {info['min_width']:g}", "status", "layers"):
        table.add_column(column, overflow="fold")
    for space in info["spaces"]:
        if space["frozen"] or all_spaces or len(info["spaces"]) <= 40:
            status = f"[red]frozen[/]: {space['reasons'][0]}" if space["frozen"] else "[green]slimmable[/]"
            layers = ", ".join(space["layers"][:3]) + (f" +{len(space['layers']) - 3}" if len(space["layers"]) > 3 else "")
            table.add_row(space["name"], str(space["channels"]), str(space["step"]),
                          str(space["active_at_min_width"]), status, layers)
    stdout.print(table)
    hidden = len(info["spaces"]) - table.row_count
    if hidden:
        stdout.print(f"({hidden} more slimmable spaces; --all shows them)")
    macs = info["multiply_adds"]
    stdout.print(f"spaces: {info['slimmable_spaces']} slimmable, {info['frozen_spaces']} frozen; "
                 f"{info['slimmable_share']:.1%} of multiply-adds scale with width")
    stdout.print(f"multiply-adds (conv + linear): {human(macs['width_1.0'])} at 1.0, {human(macs['min_width'])} at "
                 f"{info['min_width']:g} ({macs['min_over_full']:.1%}); parameters {human(info['parameters']['width_1.0'])}"
                 f" at 1.0, {human(info['parameters']['min_width'])} at {info['min_width']:g}")
    if info["rule_errors"]:
        stdout.print(f"[yellow]{len(info['rule_errors'])} graph nodes could not be analysed and were frozen; "
                     f"first: {info['rule_errors'][0]}[/]")
