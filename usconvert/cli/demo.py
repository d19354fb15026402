"""``usconvert demo``: the whole method on embedded data, nothing to download."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, reports_errors
from .spectrum import print_table


@reports_errors
def demo(
    out: Path = typer.Option(Path("usconvert-demo"), "-o", "--output", help="Folder for the files it writes."),
    quick: bool = typer.Option(False, "--quick", help="One epoch and 4 widths: under a minute."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Convert torchvision's MobileNetV2, train it as a US-Net on scikit-learn's handwritten
    digits (a few minutes on 2 CPU cores), calibrate every width and show the spectrum."""
    from ..demo import run_demo
    result = run_demo(out, quick=quick, seed=seed, say=console.print)
    print_table(result.rows)
    best, smallest = result.rows[-1], result.rows[0]
    console.print(
        f"one network: {best.top1:.1f}% top-1 at width 1.0 ({best.multiply_adds / 1e6:.1f}M multiply-adds), "
        f"{smallest.top1:.1f}% at {smallest.label} ({smallest.multiply_adds / 1e6:.1f}M)\n"
        f"files in {out}/:\n" + "\n".join(f"  {name}{_WHAT.get(name, '')}" for name in
                                         sorted(p.name for p in out.iterdir() if p.is_file())) +
        f"\nnext: usconvert export {result.network} --width 0.5 -o small.onnx")


_WHAT = {"digits_us.safetensors": ": the trained US-Net",
         "digits_us.checkpoint.safetensors": ": its last training checkpoint (train --resume)",
         "digits_us.log.jsonl": ": one record per epoch",
         "digits_us_calibrated.safetensors": ": the network with batch-norm statistics for every width",
         "spectrum.json": ": accuracy, multiply-adds and parameters per width",
         "spectrum.png": ": the plot"}
