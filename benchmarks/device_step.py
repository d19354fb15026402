"""Where a sandwich step's time goes on an accelerator (issue 17's GPU budget): MobileNetV2 at
32x32 with 10 classes (the Fashion-MNIST network), channels-last, n = 4 widths a step with
inplace distillation. Measured in one run:

- the step at four fixed widths (1.0, min, 0.5, 0.75), batches of 256 and of 1024 (a step whose
  time does not grow with the batch is bound by launches and Python, not by the device);
- the four dense sub-networks (the exported widths) forward and backward, batch 256;
- steps whose two middle widths are drawn at random and never seen before (what the first
  epochs of a US-Net meet), then the very same steps again (every shape seen once).

Mean seconds per step after a warm-up, synchronised with the device at both ends.

    python benchmarks/device_step.py [--device cuda] [--steps 20] [--new-widths 40]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, report  # noqa: E402

import usconvert  # noqa: E402
from usconvert.export import export  # noqa: E402
from usconvert.train import sandwich_step  # noqa: E402
from usconvert.train.losses import soft_cross_entropy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each fixed-width measurement")
    parser.add_argument("--new-widths", type=int, default=40, help="timed steps with never-seen middle widths")
    args = parser.parse_args()
    device = torch.device(args.device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def mean_seconds(fn: Callable[[], None], steps: int) -> float:
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        synchronize()
        return (time.perf_counter() - start) / steps

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randn(size, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        return images, torch.randint(0, 10, (size,), device=device)

    torch.manual_seed(0)
    model, source = usconvert.create("tv:mobilenet_v2", num_classes=10)
    net = usconvert.convert(model, (3, 32, 32), source=source).to(device).to(memory_format=torch.channels_last)
    net.train()
    fixed = [1.0, net.min_width, 0.5, 0.75]
    seconds: dict[str, float] = {}

    def sandwich(x: torch.Tensor, y: torch.Tensor, widths: list[float]) -> None:
        net.zero_grad(set_to_none=True)
        sandwich_step(net, net, x, y, widths, criterion=F.cross_entropy, distill=soft_cross_entropy)

    for size in (256, 1024):
        x, y = batch(size)
        mean_seconds(lambda: sandwich(x, y, fixed), 3)
        seconds[f"sandwich_fixed_widths_batch{size}"] = mean_seconds(lambda: sandwich(x, y, fixed), args.steps)

    x, y = batch(256)
    with net.sliced_statistics():
        dense = [export(net, w).train().to(memory_format=torch.channels_last) for w in fixed]

    def dense_sum() -> None:
        for sub_network in dense:
            sub_network.zero_grad(set_to_none=True)
            F.cross_entropy(sub_network(x), y).backward()

    mean_seconds(dense_sum, 3)
    seconds["dense_forward_backward_sum_batch256"] = mean_seconds(dense_sum, args.steps)

    draw = random.Random(0)
    draws = [[1.0, net.min_width, draw.uniform(net.min_width, 1), draw.uniform(net.min_width, 1)]
             for _ in range(args.new_widths)]
    for name in ("sandwich_new_widths_batch256", "sandwich_same_widths_again_batch256"):
        pending = iter(draws)
        seconds[name] = mean_seconds(lambda: sandwich(x, y, next(pending)), len(draws))

    report({"benchmark": "device_step", "device": str(device), "seconds": seconds,
            "batch1024_over_batch256": seconds["sandwich_fixed_widths_batch1024"]
            / seconds["sandwich_fixed_widths_batch256"],
            "sandwich_over_dense_sum": seconds["sandwich_fixed_widths_batch256"]
            / seconds["dense_forward_backward_sum_batch256"],
            "new_widths_over_seen_widths": seconds["sandwich_new_widths_batch256"]
            / seconds["sandwich_same_widths_again_batch256"], **environment()})


if __name__ == "__main__":
    main()
