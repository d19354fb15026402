"""What giving the tracer the example costs (issue 19): tracing both modes with values for
sizes (``if H % window:`` takes the traced value, guarded at run time) against the plain
symbolic trace, interleaved, medians; with one forward at the traced batch for scale. The
values come from fake tensors (``SlimTracer.fake_example``); ``real_values`` runs the same
nodes on real tensors, as before 2026-12-07.

    python benchmarks/trace_values.py [--models resnet50,mobilenetv2_100,swin_tiny_patch4_window7_224,mobilevit_xxs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, interleaved, report  # noqa: E402

import usconvert  # noqa: E402
from usconvert.graph.trace import SlimTracer, _choose_graphs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet50,mobilenetv2_100,swin_tiny_patch4_window7_224,mobilevit_xxs")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, _ = usconvert.create(name)
        model.eval()
        example = torch.randn(2, 3, args.size, args.size)
        with torch.no_grad():
            model(example)  # the warm-up call convert makes before tracing
        times = interleaved({"with_values": lambda: _choose_graphs(model, example),
                             "real_values": lambda: _with_real_values(model, example),
                             "symbolic": lambda: _choose_graphs(model, None),
                             "forward": lambda: _forward(model, example)}, repeats=args.repeats)
        model.eval()
        rows.append({"model": name, "size": args.size, "trace_with_values_s": round(times["with_values"], 3),
                     "symbolic_trace_s": round(times["symbolic"], 3),
                     "ratio": round(times["with_values"] / times["symbolic"], 2),
                     "trace_with_real_values_s": round(times["real_values"], 3),
                     "fake_over_real": round(times["with_values"] / times["real_values"], 2),
                     "one_forward_at_batch_2_s": round(times["forward"], 3)})
    report({"environment": environment(), "repeats": args.repeats, "rows": rows})


def _with_real_values(model: torch.nn.Module, example: torch.Tensor) -> None:
    setting, SlimTracer.fake_example = SlimTracer.fake_example, False
    try:
        _choose_graphs(model, example)
    finally:
        SlimTracer.fake_example = setting


def _forward(model: torch.nn.Module, example: torch.Tensor) -> None:
    with torch.no_grad():
        model.eval()(example)


if __name__ == "__main__":
    main()
