"""What the conversion self-check costs: ``convert`` with and without it (``check=False``),
interleaved, medians; 224x224 as the issue asks.

    python benchmarks/convert_check.py [--models resnet50,mobilenetv2_100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, interleaved, report  # noqa: E402

import usconvert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet50,mobilenetv2_100")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    size = (3, args.size, args.size)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, source = usconvert.create(name)
        model.eval()
        times = interleaved({"checked": lambda: usconvert.convert(model, size, source=source),
                             "unchecked": lambda: usconvert.convert(model, size, source=source, check=False)},
                            repeats=args.repeats)
        forward = interleaved({"forward": lambda: _forward(model, size)}, repeats=args.repeats)["forward"]
        rows.append({"model": name, "size": list(size), "unchecked_s": round(times["unchecked"], 3),
                     "checked_s": round(times["checked"], 3), "ratio": round(times["checked"] / times["unchecked"], 2),
                     "one_forward_at_batch_1_s": round(forward, 3)})
    report({"environment": environment(), "repeats": args.repeats, "rows": rows})


def _forward(model: torch.nn.Module, size: tuple[int, ...]) -> None:
    with torch.no_grad():
        model(torch.randn(1, *size))


if __name__ == "__main__":
    main()
