"""``usconvert profile``: what each width costs, no data needed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..profile import profile as profile_net
from ..serialize import load
from .common import console, human, print_json, reports_errors, stdout
from .options import widths_or_default


@reports_errors
def profile(
    network: Path = typer.Argument(..., help="A network written by usconvert (.safetensors)."),
    widths: Optional[str] = typer.Option(None, "--widths", help="A list or range (default: min width to 1.0, "
                                                                "4 points)."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Each layer's share of the multiply-adds."),
    batch: int = typer.Option(16, "--batch", help="The larger batch to time, besides batch 1."),
    repeats: int = typer.Option(20, "--repeats", help="Timed runs per width (the median is reported)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Multiply-adds, parameters in use and measured eval latency at each width."""
    net = load(network, map_location=device)
    grid = widths_or_default(widths, net, round((1.0 - net.min_width) / 3, 6))
    with console.status(f"profiling {len(grid)} widths"):
        rows = profile_net(net, grid, batch=batch, repeats=repeats, per_layer=per_layer)
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("width", "multiply-adds", "parameters", "batch 1", f"batch {batch}"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(f"{r['width']:g}", human(r["multiply_adds"]), human(r["parameters"]),
                      f"{r['latency_ms_batch_1']:.2f} ms", f"{r[f'latency_ms_batch_{batch}']:.2f} ms")
    stdout.print(table)
    if per_layer:
        for r in rows:
            layers = sorted(r["layers"].items(), key=lambda kv: -kv[1]["multiply_adds"])
            stdout.print(f"width {r['width']:g}: " + ", ".join(f"{n} {v['share']:.1%}" for n, v in layers[:8]) +
                         (f" (+{len(layers) - 8} more)" if len(layers) > 8 else ""))
