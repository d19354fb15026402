"""``usconvert census``: which models of timm and torchvision convert and pass every check."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsconvertError
from .common import checked_outputs, console, parse_input_size, print_json, progress, reports_errors, stdout
from .options import JSON, Outputs, outputs

SUFFIXES = (".json", ".md")


@reports_errors
def census(
    source: str = typer.Option("all", "--source", help="timm, torchvision or all."),
    filter: Optional[str] = typer.Option(None, "--filter", help="A glob on model names (tv: for torchvision)."),
    one_per_family: bool = typer.Option(False, "--one-per-family", help="One small timm variant per timm module."),
    models: Optional[Path] = typer.Option(None, "--models", help="A file of model names, one per line, instead "
                                                                 "of --source/--filter."),
    input_size: str = typer.Option("3,128,128", "--input-size", help="C,H,W or C,T,H,W (a model that rejects it is "
                                                                     "retried at the smallest multiples of 14, 32, "
                                                                     "48 and 64 above it, then at its own size)."),
    timeout: float = typer.Option(120, "--timeout", help="Seconds per model."),
    jobs: int = typer.Option(1, "--jobs", help="Models checked at once."),
    output: Outputs = outputs(".json every result, .md a report such as docs/COVERAGE.md"),
    as_json: bool = JSON,
) -> None:
    """Convert every model and check it (each in its own process, with a time limit): equality
    at width 1.0, prefix equivalence at the min and a nonuniform width, export at the min width,
    torch's FlopCounterMode against fvcore's count, and channels sorted by importance keeping
    width 1.0 and every width a sub-network."""
    if source not in ("timm", "torchvision", "all"):
        raise UsconvertError(f"--source must be timm, torchvision or all, got {source!r}")
    files = checked_outputs(output, SUFFIXES)
    size = parse_input_size(input_size, image=True)
    if models is not None:
        if not models.is_file():
            raise UsconvertError(f"--models {models} does not exist")
        names = [line.strip() for line in models.read_text().splitlines() if line.strip()]
    else:
        from ..census import model_names
        with console.status("listing models" + (" (the smallest of each timm family: counted once per timm "
                                                 "version, then cached)" if one_per_family else "")):
            names = model_names(source, filter, one_per_family)
    if not names:
        raise UsconvertError("no model matches")
    from ..census import census as run_census, grouped_failures, markdown
    from ..files import atomic_path, write_json_file
    with progress("census", counter="{task.fields[passed]} pass") as bar:
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
    if ".json" in files:
        write_json_file(files[".json"], {**meta, "results": results})
    if ".md" in files:
        with atomic_path(files[".md"]) as tmp:
            tmp.write_text(markdown(results, meta))
    if as_json:
        print_json({**meta, "results": results})
        return
    passed = sum(r["passed"] for r in results)
    stdout.print(f"{passed} of {len(results)} models pass")
    for cause, failed in list(grouped_failures(results).items())[:10]:
        stdout.print(f"  {len(failed)} x {cause}: {', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}")
