"""What the commands share: the console, error reporting, argument parsing, the summary table."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import typer
from rich.console import Console

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


def progress(description: str, *, disable: bool = False, counter: str = "") -> Any:
    """The progress bar of every long command (on stderr): what runs, done of total, time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    columns = [TextColumn(description), BarColumn(), MofNCompleteColumn()]
    if counter:
        columns.append(TextColumn(counter))
    return Progress(*columns, TimeRemainingColumn(), console=console, disable=disable)


def parse_input_size(text: str | None, *, image: bool = False) -> tuple[int, ...] | None:
    """``--input-size C,H,W`` (or CxHxW); ``image``: a named model's, C,H,W for an image model
    or C,T,H,W for a video one (torchvision's)."""
    if text is None:
        return None
    try:
        size = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise UsconvertError(f"--input-size must look like 3,224,224, got {text!r}") from None
    if not size or any(s < 1 for s in size):
        raise UsconvertError(f"--input-size must be positive, got {text!r}")
    if image and len(size) not in (3, 4):
        raise UsconvertError(f"--input-size must be C,H,W (such as 3,224,224), or C,T,H,W for a video model (such as "
                             f"3,16,112,112), got {text!r}")
    return size


def print_json(data: Any) -> None:
    """``--json``, in every command: the result as JSON on stdout (and nothing else there)."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def checked_output(path: Path, suffixes: Iterable[str], option: str = "-o") -> Path:
    """A file a command will write, checked before any work starts: a suffix it can write,
    in a folder that exists."""
    suffixes = list(suffixes)
    if path.suffix not in suffixes:
        choices = ", ".join(suffixes[:-1]) + (" or " if len(suffixes) > 1 else "") + suffixes[-1]
        raise UsconvertError(f"{option} must end in {choices}, got {path}")
    if not path.parent.is_dir():
        raise UsconvertError(f"{option} {path}: the folder {path.parent} does not exist")
    return path


def checked_outputs(paths: Iterable[Path] | None, suffixes: Iterable[str]) -> dict[str, Path]:
    """Repeatable ``-o``: each file's suffix chooses what is written to it (one file per suffix)."""
    chosen: dict[str, Path] = {}
    for path in paths or []:
        checked_output(path, suffixes)
        if path.suffix in chosen:
            raise UsconvertError(f"-o names two {path.suffix} files: {chosen[path.suffix]} and {path}")
        chosen[path.suffix] = path
    return chosen


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
    from rich.table import Table
    table = Table(show_edge=False, pad_edge=False)
    # a space's name whole where it fits in a third of the console (80 columns when piped); the layers fold
    longest = max((len(space["name"]) for space in info["spaces"]), default=0)
    table.add_column("space", overflow="fold", min_width=min(longest, stdout.width // 3))
    for column in ("channels", "step", f"at {info['min_width']:g}", "status", "layers"):
        table.add_column(column, overflow="fold")
    for space in info["spaces"]:
        if space["frozen"] or all_spaces or len(info["spaces"]) <= 40:
            status = f"[red]frozen[/]: {space['reasons'][0]}" if space["frozen"] else "[green]slimmable[/]"
            more = len(space["layers"]) - 3
            layers = ", ".join(space["layers"][:3]) + (f" +{more}" if more > 0 else "")
            table.add_row(space["name"], str(space["channels"]), str(space["step"]),
                          str(space["active_at_min_width"]), status, layers)
    stdout.print(table)
    hidden = len(info["spaces"]) - table.row_count
    if hidden:
        stdout.print(f"({hidden} more slimmable spaces; --all shows them)")
    macs = info["multiply_adds"]
    stdout.print(f"spaces: {info['slimmable_spaces']} slimmable, {info['frozen_spaces']} frozen; "
                 f"{info['slimmable_share']:.1%} of multiply-adds scale with width")
    parameters = info["parameters"]
    stdout.print(f"multiply-adds (conv + linear): {human(macs['width_1.0'])} at 1.0, {human(macs['min_width'])} at "
                 f"{info['min_width']:g} ({macs['min_over_full']:.1%}); parameters {human(parameters['width_1.0'])}"
                 f" at 1.0, {human(parameters['min_width'])} at {info['min_width']:g}")
    if "calibrated_widths" in info:
        calibrated = ", ".join(info["calibrated_widths"]) or "none yet (usconvert calibrate computes them)"
        stdout.print(f"batch-norm statistics: width 1.0 and calibrated widths: {calibrated}")
    if info["rule_errors"]:
        stdout.print(f"[yellow]{len(info['rule_errors'])} graph nodes could not be analysed and were frozen; "
                     f"first: {info['rule_errors'][0]}[/]")
