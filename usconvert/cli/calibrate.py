"""``usconvert calibrate``: batch-norm statistics for every width (BN post-statistics)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsconvertError
from .common import console, progress, reports_errors
from .options import BATCH, DATA, DEVICE, WORKERS, output_path, splits_for, widths_or_default


@reports_errors
def calibrate(
    network: Path = typer.Argument(..., help="A trained network (.safetensors)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the network with its statistics."),
    data: str = DATA,
    samples: int = typer.Option(1024, "--samples", help="Training images to compute statistics from "
                                                        "(the paper: 1024 suffice)."),
    widths: Optional[str] = typer.Option(None, "--widths", help="A list (0.25,0.5,1.0) or a range "
                                                                "(0.25:1.0:0.025, the default from the min width)."),
    configs: Optional[Path] = typer.Option(None, "--configs", help="JSON: {name: {space: ratio, ...}} of "
                                                                   "nonuniform configurations to calibrate too "
                                                                   "(usconvert search writes them)."),
    mode: str = typer.Option("exact", "--mode", help="exact (cumulative average, Eq. 8) or moving (Eq. 5, "
                                                     "momentum 0.1: it keeps 0.9^k of its fresh start after k "
                                                     "batches, so it needs hundreds of batches)."),
    augment: bool = typer.Option(False, "--augment", help="Use training augmentation (off: eval transforms)."),
    batch_size: int = BATCH,
    workers: int = WORKERS,
    seed: int = typer.Option(0, "--seed", help="Which training images are drawn."),
    device: str = DEVICE,
) -> None:
    """Compute batch-norm statistics for every width from a few training images. Under torchrun
    the ranks split the samples and the statistics are reduced exactly."""
    output_path(output)
    if mode not in ("exact", "moving"):
        raise UsconvertError(f"--mode must be exact or moving, got {mode!r}")
    if samples < 1:
        raise UsconvertError("--samples must be at least 1")
    from ..configs import read_configs
    named = read_configs(configs) if configs is not None else {}
    from ..calibrate import calibrate as calibrate_net
    from ..data import calibration_loader
    from ..distributed import setup, teardown
    from ..serialize import load, save
    dist, chosen = setup(device)
    try:
        net = load(network, map_location=chosen)
        grid = widths_or_default(widths, net, 0.025)
        splits = splits_for(net, data, seed=seed)
        loader = calibration_loader(splits, batch_size, augment=augment, seed=seed, num_replicas=dist.world_size,
                                    rank=dist.rank, workers=workers)
        share = -(-samples // dist.world_size)
        with progress(f"calibrating {len(grid) + len(named)} widths", disable=not dist.is_main) as bar:
            task = bar.add_task("", total=min(share, len(loader.sampler)))
            report = calibrate_net(net, loader, grid, configs=named, samples=share, mode=mode, device=chosen,
                                   reduce=dist.sum_tensors if dist.enabled else None,
                                   on_batch=lambda n: bar.advance(task, n))
        if dist.is_main:
            if report.message:
                console.print(report.message)
            save(net, output)
            console.print(f"calibrated {len(report.widths)} channel configurations ({len(grid)} widths"
                          f"{f', {len(named)} nonuniform' if named else ''}) from {report.samples * dist.world_size}"
                          f" images in {report.seconds:.1f}s ({mode}); wrote {output}")
    finally:
        teardown()
