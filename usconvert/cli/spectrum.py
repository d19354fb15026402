"""``usconvert spectrum``: accuracy against multiply-adds at every width (the paper's Figure 3)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import UsconvertError
from .common import checked_outputs, console, print_json, progress, reports_errors, stdout
from .options import BATCH, DATA, DEVICE, JSON, WORKERS, Outputs, checked, outputs, splits_for

SUFFIXES = (".json", ".csv", ".png")


@reports_errors
def spectrum(
    network: Path = typer.Argument(..., help="A calibrated network (.safetensors)."),
    data: str = DATA,
    step: float = typer.Option(0.025, "--step", help="Width step of the grid."),
    min_width: Optional[float] = typer.Option(None, "--min", help="Smallest width (default: the network's)."),
    max_width: float = typer.Option(1.0, "--max", help="Largest width."),
    widths: Optional[str] = typer.Option(None, "--widths", help="An explicit list or range instead of the grid."),
    configs: Optional[Path] = typer.Option(None, "--configs", help="JSON of named nonuniform widths (usconvert "
                                           "search writes them) to evaluate beside the uniform ones; calibrate "
                                           "them first with calibrate --configs."),
    output: Outputs = outputs(".json rows, .csv rows, .png plot"),
    as_json: bool = JSON,
    compare: Optional[List[Path]] = typer.Option(None, "--compare", help="Other spectrum JSON files to draw "
                                                                         "(a one-row file is drawn as a point)."),
    latency: bool = typer.Option(False, "--latency", help="Also measure batch-1 latency at each width."),
    name: Optional[str] = typer.Option(None, "--name", help="This network's name in the plot and JSON."),
    batch_size: int = BATCH,
    workers: int = WORKERS,
    device: str = DEVICE,
) -> None:
    """Evaluate each width once on the validation split: top-1/top-5 (or loss/PSNR),
    multiply-adds and parameters in use."""
    files = checked_outputs(output, SUFFIXES)
    from ..data import eval_loader
    from ..distributed import setup, teardown
    from ..serialize import load
    from ..configs import read_configs
    from ..spectrum import load_series, plot, spectrum as run_spectrum, write_csv, write_json
    from ..width import parse_widths
    dist, chosen = setup(device)
    try:
        net = load(network, map_location=chosen)
        grid = checked(net, parse_widths(widths or f"{min_width or net.min_width}:{max_width}:{step}"))
        named = read_configs(configs) if configs is not None else {}
        splits = splits_for(net, data)
        loader = eval_loader(splits.val, batch_size, num_replicas=dist.world_size, rank=dist.rank, workers=workers)
        _check_calibrated(net, grid, network, data)
        _check_configs_calibrated(net, named, network, configs)
        with progress(f"evaluating {len(grid) + len(named)} widths", disable=not dist.is_main) as bar:
            task = bar.add_task("", total=len(loader.sampler))
            rows = run_spectrum(net, loader, [*grid, *named.values()], latency=latency, device=chosen,
                                reduce=(lambda v: dist.sum(v, chosen)) if dist.enabled else None,
                                on_batch=lambda n: bar.advance(task, n))
        for row, name in zip(rows[len(grid):], named):
            row.configuration = name  # the file's names, whatever the statistics were calibrated as
        if not dist.is_main:
            return
        label = name or network.stem
        meta = {"name": label, "network": str(network), "data": splits.name}
        if ".json" in files:
            write_json(rows, files[".json"], meta)
        if ".csv" in files:
            write_csv(rows, files[".csv"])
        if ".png" in files:
            uniform = [r.__dict__ for r in rows if r.width is not None]
            points = [{"name": r.configuration, "rows": [r.__dict__]} for r in rows if r.width is None]
            series = [{"name": label, "rows": uniform}, *points] + [load_series(p) for p in compare or []]
            plot(series, files[".png"])
        if as_json:
            print_json({**meta, "rows": [r.__dict__ for r in rows]})
        else:
            print_table(rows)
        if files:
            console.print(f"wrote {', '.join(map(str, files.values()))}")
    finally:
        teardown()


def _check_calibrated(net, grid: list, network: Path, data: str) -> None:
    """Every width evaluates in eval mode with its own batch-norm statistics: say before any work
    which are missing, and the command that computes them."""
    missing = []
    for width in grid:
        net.set_width(width)
        if not net.has_statistics():
            missing.append(f"{width:g}")
    net.set_width(1.0)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        widths = f"{min(grid):g}:{max(grid):g}:{(grid[1] - grid[0]) if len(grid) > 1 else 0.025:g}"
        raise UsconvertError(
            f"{network} has no batch-norm statistics for width {shown} of the {len(grid)} asked (spectrum "
            f"evaluates each width with its own); compute them first: usconvert calibrate {network} --data {data} "
            f"--widths {widths} -o {network.stem}_calibrated.safetensors")


def _check_configs_calibrated(net, named: dict, network: Path, path: Optional[Path]) -> None:
    for name, config in named.items():
        net.set_width(config)
        if not net.has_statistics():
            net.set_width(1.0)
            raise UsconvertError(f"{network} has no batch-norm statistics for the configuration {name!r}: compute "
                                 f"them first: usconvert calibrate {network} --configs {path} -o "
                                 f"{network.stem}_calibrated.safetensors")
    net.set_width(1.0)


def print_table(rows) -> None:
    from rich.table import Table
    regression = rows[0].psnr is not None
    table = Table(show_edge=False, pad_edge=False)
    top5 = rows[0].top5 is not None
    columns = ["width", "multiply-adds", "parameters"] + (["L1", "PSNR"] if regression else ["top-1"])
    if top5:
        columns.append("top-5")
    if rows[0].latency_ms_batch_1 is not None:
        columns.append("latency")
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        values = [r.label, f"{r.multiply_adds / 1e6:.1f}M", f"{r.parameters / 1e6:.2f}M"]
        values += [f"{r.loss:.4f}", f"{r.psnr:.2f} dB"] if regression else [f"{r.top1:.1f}%"]
        if top5:
            values.append(f"{r.top5:.1f}%")
        if r.latency_ms_batch_1 is not None:
            values.append(f"{r.latency_ms_batch_1:.1f} ms")
        table.add_row(*values)
    stdout.print(table)
