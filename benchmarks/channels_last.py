"""One sandwich step (n = 4: widths 1.0, min, and two in between, inplace distillation) of a
slimmable network with NCHW tensors against the same step with channels-last (NHWC) weights
and images (``train --channels-last``), measured in one run, interleaved. The default is the
Fashion-MNIST setting of ``examples/paper`` (torchvision's mobilenet_v2 at 32x32, batches of 128).

    python benchmarks/channels_last.py [--model tv:mobilenet_v2] [--batch 128] [--size 32]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, interleaved, report  # noqa: E402

import usconvert  # noqa: E402
from usconvert.train import sandwich_step  # noqa: E402
from usconvert.train.losses import soft_cross_entropy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tv:mobilenet_v2")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    nets, inputs = {}, {}
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model, source = usconvert.create(args.model, num_classes=10)
        net = usconvert.convert(model, (3, args.size, args.size), source=source).train()
        nets[layout] = net.to(memory_format=layout)
        inputs[layout] = x.contiguous(memory_format=layout)
    widths = [1.0, nets[torch.channels_last].min_width, 0.5, 0.75]

    def step(layout: torch.memory_format) -> None:
        net = nets[layout]
        net.zero_grad(set_to_none=True)
        sandwich_step(net, net, inputs[layout], y, widths, criterion=F.cross_entropy, distill=soft_cross_entropy)

    times = interleaved({"nchw": lambda: step(torch.contiguous_format),
                         "channels_last": lambda: step(torch.channels_last)}, args.repeats)
    report({"benchmark": "channels_last", "model": args.model, "batch": args.batch, "input": args.size,
            "widths": widths, "seconds": times, "speedup": times["nchw"] / times["channels_last"], **environment()})


if __name__ == "__main__":
    main()
