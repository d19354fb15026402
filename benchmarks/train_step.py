"""One sandwich step (n = 4: widths 1.0, min, and two in between) of a slimmable network
against the sum of plain forward+backward passes of dense models of the same widths (the
exported sub-networks), and the same step with a frozen teacher (``train --teacher original``:
one more eval forward per batch, and every width distilling from it), measured in one run,
interleaved.

    python benchmarks/train_step.py [--model mobilenetv2_100] [--batch 32] [--size 224]
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
from usconvert.export import export  # noqa: E402
from usconvert.train import sandwich_step  # noqa: E402
from usconvert.train.losses import TeacherDistillation, soft_cross_entropy  # noqa: E402
from usconvert.train.teacher import build_teacher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilenetv2_100")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    model, source = usconvert.create(args.model)
    net = usconvert.convert(model, (3, args.size, args.size), source=source)
    widths = [1.0, net.min_width, 0.5, 0.75]
    with net.sliced_statistics():
        dense = [export(net, w).train() for w in widths]
    teacher = build_teacher("original", net)
    kd = TeacherDistillation()
    net.train()
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch,))

    def sandwich() -> None:
        net.zero_grad(set_to_none=True)
        sandwich_step(net, net, x, y, widths, criterion=F.cross_entropy, distill=soft_cross_entropy)

    def dense_sum() -> None:
        for model in dense:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()

    def with_teacher() -> None:
        net.zero_grad(set_to_none=True)
        with torch.no_grad():
            teacher_output = teacher(x)
        sandwich_step(net, net, x, y, widths, criterion=F.cross_entropy, distill=kd, teacher_output=teacher_output)

    times = interleaved({"sandwich_step": sandwich, "dense_forward_backward_sum": dense_sum,
                         "sandwich_step_with_teacher": with_teacher}, args.repeats)
    report({"benchmark": "train_step", "model": args.model, "batch": args.batch, "input": args.size,
            "widths": widths, "seconds": times,
            "overhead_ratio": times["sandwich_step"] / times["dense_forward_backward_sum"],
            "teacher_ratio": times["sandwich_step_with_teacher"] / times["sandwich_step"], **environment()})


if __name__ == "__main__":
    main()
