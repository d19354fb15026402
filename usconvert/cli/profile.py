"""``usconvert profile``: what each width costs, no data needed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsconvertError
from .common import checked_outputs, console, human, print_json, reports_errors, stdout
from .options import DEVICE, JSON, Outputs, outputs, widths_or_default

SUFFIXES = (".json", ".csv")


@reports_errors
def profile(
    network: Path = typer.Argument(..., help="A network written by usconvert (.safetensors)."),
    widths: Optional[str] = typer.Option(None, "--widths", help="A list or range (default: min width to 1.0, "
                                                                "4 points)."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Each layer's share of the multiply-adds."),
    batch_size: int = typer.Option(16, "-b", "--batch-size", help="The larger batch to time, besides batch 1."),
    repeats: int = typer.Option(20, "--repeats", help="Timed runs per width at batch 1 (a quarter of them at "
                                                      "the larger batch); the median and interquartile range "
                                                      "are reported."),
    output: Outputs = outputs(".json rows, .csv rows"),
    as_json: bool = JSON,
    device: str = DEVICE,
) -> None:
    """Multiply-adds, parameters in use and measured eval latency at each width."""
    if batch_size < 1 or repeats < 2:
        raise UsconvertError("-b must be at least 1 and --repeats at least 2")
    files = checked_outputs(output, SUFFIXES)
    from ..distributed import setup
    from ..files import write_csv_file, write_json_file
    from ..profile import WIDE_SPREAD, profile as profile_net
    from ..serialize import load
    net = load(network, map_location=setup(device)[1])
    grid = widths_or_default(widths, net, round((1.0 - net.min_width) / 3, 6))
    with console.status(f"profiling {len(grid)} widths"):
        rows = profile_net(net, grid, batch=batch_size, repeats=repeats, per_layer=per_layer)
    result = {"network": str(network), "device": str(next(net.parameters()).device), "rows": rows}
    if ".json" in files:
        write_json_file(files[".json"], result)
    if ".csv" in files:
        write_csv_file(files[".csv"], rows)
    for r in rows:
        for size in sorted({1, batch_size}):
            median, iqr = r[f"latency_ms_batch_{size}"], r[f"latency_iqr_ms_batch_{size}"]
            if median and iqr > WIDE_SPREAD * median:
                console.print(f"[yellow]warning:[/] latency at width {r['width']:g}, batch {size} spread widely "
                              f"(interquartile range {iqr:.1f} ms around a median of {median:.1f} ms): the machine "
                              f"is busy; rerun with more --repeats", soft_wrap=True)
    if as_json:
        print_json(result)
    else:
        _print_table(rows, batch_size, per_layer)
    if files:
        console.print(f"wrote {', '.join(map(str, files.values()))}")


def _print_table(rows: list[dict], batch_size: int, per_layer: bool) -> None:
    from rich.table import Table
    table = Table(show_edge=False, pad_edge=False)
    for column in ("width", "multiply-adds", "parameters", "batch 1", f"batch {batch_size}"):
        table.add_column(column, justify="right")
    for r in rows:
        latencies = [f"{r[f'latency_ms_batch_{size}']:.2f} ms ±{r[f'latency_iqr_ms_batch_{size}'] / 2:.2f}"
                     for size in (1, batch_size)]
        table.add_row(f"{r['width']:g}", human(r["multiply_adds"]), human(r["parameters"]), *latencies)
    stdout.print(table)
    stdout.print("latency: median ± half the interquartile range")
    if per_layer:
        for r in rows:
            layers = sorted(r["layers"].items(), key=lambda kv: -kv[1]["multiply_adds"])
            stdout.print(f"width {r['width']:g}: " + ", ".join(f"{n} {v['share']:.1%}" for n, v in layers[:8]) +
                         (f" (+{len(layers) - 8} more)" if len(layers) > 8 else ""))
