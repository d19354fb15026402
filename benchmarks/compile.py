"""torch.compile on a slimmable network at one width, against the same network run eagerly,
measured in one run, interleaved: a training step (forward and backward, train mode) and an
eval forward without gradients (where the eager network runs its eval cache, a plain module of
views). Compile time is reported apart.

    python benchmarks/compile.py [--model tv:resnet18] [--width 0.5] [--batch 32] [--size 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, interleaved, report  # noqa: E402

import usconvert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tv:resnet18")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backend", default="inductor")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, source = usconvert.create(args.model, num_classes=10)
    net = usconvert.convert(model, (3, args.size, args.size), source=source)
    x = torch.randn(args.batch, 3, args.size, args.size)
    usconvert.calibrate(net, [(torch.randn(64, 3, args.size, args.size),)], [args.width], samples=64)
    net.set_width(args.width)
    compiled = torch.compile(net, backend=args.backend)

    def train_step(module: torch.nn.Module) -> None:
        net.train()
        net.zero_grad(set_to_none=True)
        module(x).sum().backward()

    def eval_forward(module: torch.nn.Module) -> None:
        net.eval()
        with torch.no_grad():
            module(x)

    compile_seconds = {}
    for name, step in (("train", train_step), ("eval", eval_forward)):
        start = time.perf_counter()
        step(compiled)
        compile_seconds[name] = time.perf_counter() - start
    train = interleaved({"eager": lambda: train_step(net), "compiled": lambda: train_step(compiled)}, args.repeats)
    evaluation = interleaved({"eager": lambda: eval_forward(net), "compiled": lambda: eval_forward(compiled)},
                             args.repeats)
    report({"benchmark": "compile", "model": args.model, "width": args.width, "batch": args.batch,
            "input": args.size, "backend": args.backend, "compile_seconds": compile_seconds,
            "train_step_seconds": train, "train_speedup": train["eager"] / train["compiled"],
            "eval_forward_seconds": evaluation, "eval_speedup": evaluation["eager"] / evaluation["compiled"],
            **environment()})


if __name__ == "__main__":
    main()
