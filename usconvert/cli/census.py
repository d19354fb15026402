"""``usconvert census``: which models of timm and torchvision convert and pass every check."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..census import census as run_census, grouped_failures, markdown, model_names
from ..errors import UsconvertError
from ..serialize import atomic_path
from .common import console, parse_input_size, reports_errors, stdout


@reports_errors
def census(
    source: str = typer.Option("all", "--source", help="timm, torchvision or all."),
    filter: Optional[str] = typer.Option(None, "--filter", help="A glob on model names (tv: for torchvision)."),
    one_per_family: bool = typer.Option(False, "--one-per-family", help="One small timm variant per timm module."),
    models: Optional[Path] = typer.Option(None, "--models", help="A file of model names, one per line, instead "
                                                                 "of --source/--filter."),
    input_size: str = typer.Option("3,128,128", "--input-size", help="C,H,W (a model that needs its own size "
                                                                     "is retried at it)."),
    timeout: float = typer.Option(120, "--timeout", help="Seconds per model."),
    jobs: int = typer.Option(1, "-j", "--jobs", help="Models checked at once."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every result as JSON."),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Write a report (docs/COVERAGE.md)."),
) -> None:
    """Convert every model and check it (each in its own process, with a time limit): equality
    at width 1.0, prefix equivalence at the min and a nonuniform width, export at the min width."""
    if source not in ("timm", "torchvision", "all"):
        raise UsconvertError(f"--source must be timm, torchvision or all, got {source!r}")
    if models is not None:
        if not models.is_file():
            raise UsconvertError(f"--models {models} does not exist")
        names = [line.strip() for line in models.read_text().splitlines() if line.strip()]
    else:
        names = model_names(source, filter, one_per_family)
    if not names:
        raise UsconvertError("no model matches")
    size = parse_input_size(input_size)
    with Progress(TextColumn("census"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[passed]} pass"),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("", total=len(names), passed=0)
        counts = {"passed": 0}

        def done(result: dict) -> None:
            counts["passed"] += result["passed"]
            bar.update(task, advance=1, passed=counts["passed"])

        results = run_census(names, input_size=size, timeout=timeout, jobs=jobs, on_result=done)
    import timm
    import torch
    import torchvision
    command = "usconvert census " + " ".join(sys.argv[2:])
    meta = {"command": command.strip(), "date": datetime.date.today().isoformat(), "timm": timm.__version__,
            "torch": torch.__version__, "torchvision": torchvision.__version__}
    if json_out:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({**meta, "results": results}, indent=1))
    if markdown_out:
        with atomic_path(markdown_out) as tmp:
            tmp.write_text(markdown(results, meta))
    passed = sum(r["passed"] for r in results)
    stdout.print(f"{passed} of {len(results)} models pass")
    for cause, failed in list(grouped_failures(results).items())[:10]:
        stdout.print(f"  {len(failed)} x {cause}: {', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}")
