"""Calibrating 31 widths x 1024 samples against 31 x 1024 plain forward passes (train-mode
batch norm, no gradients) of the same sub-networks exported as dense models, in one run.

    python benchmarks/calibrate.py [--model mobilenetv2_100] [--size 128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, interleaved, report  # noqa: E402

import usconvert  # noqa: E402
from usconvert.width import width_grid  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilenetv2_100")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    model, source = usconvert.create(args.model)
    net = usconvert.convert(model, (3, args.size, args.size), source=source)
    widths = width_grid(net.min_width, 1.0, 0.025)
    batches = [(torch.randn(args.batch, 3, args.size, args.size),) for _ in range(args.samples // args.batch)]
    with net.sliced_statistics():
        dense = [usconvert.export(net, w).train() for w in widths]

    def calibrate() -> None:
        usconvert.calibrate(net, batches, widths, samples=args.samples)

    def dense_forwards() -> None:
        with torch.no_grad():
            for (x,) in batches:
                for model in dense:
                    model(x)

    times = interleaved({"calibrate": calibrate, "dense_forwards": dense_forwards}, args.repeats, warmup=0)
    report({"benchmark": "calibrate", "model": args.model, "input": args.size, "widths": len(widths),
            "samples": args.samples, "seconds": times, "ratio": times["calibrate"] / times["dense_forwards"],
            **environment()})


if __name__ == "__main__":
    main()
