"""Eval latency of a slimmable network (with its width cache, and without) against the
exported model of the same width and the original model, interleaved, medians.

    python benchmarks/overhead.py [--models mobilenetv2_100,resnet50] [--batches 1,16] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, interleaved, report  # noqa: E402

import usconvert  # noqa: E402
from usconvert.profile import count_macs  # noqa: E402

WIDTHS = (0.25, 0.5, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="mobilenetv2_100,resnet50")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, source = usconvert.create(name)
        model = model.eval().to(device)
        net = usconvert.convert(model, (3, args.size, args.size), source=source).to(device).eval()
        for batch in map(int, args.batches.split(",")):
            x = torch.randn(batch, 3, args.size, args.size, device=device)
            for width in WIDTHS:
                net.set_width(width)
                with net.sliced_statistics(), torch.inference_mode():
                    exported = usconvert.export(net).to(device)
                    candidates = {"slimmable": lambda: net(x), "exported": lambda: exported(x)}
                    if width == 1.0:
                        candidates["original"] = lambda: model(x)
                    uncached = _uncached(net, x)
                    candidates["slimmable_uncached"] = uncached
                    times = _timed(candidates, args.repeats, device)
                row = {"model": name, "batch": batch, "width": width, "ms": {k: 1000 * v for k, v in times.items()},
                       "slimmable_over_exported": times["slimmable"] / times["exported"],
                       "uncached_over_exported": times["slimmable_uncached"] / times["exported"],
                       "multiply_adds": count_macs(net).macs}
                results.append(row)
                print(f"{name} b{batch} w{width}: " + ", ".join(f"{k} {v:.1f}ms" for k, v in row["ms"].items()),
                      file=sys.stderr)
    for name in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            rows = {r["width"]: r for r in results if r["model"] == name and r["batch"] == batch}
            results.append({"model": name, "batch": batch, "summary": True,
                            "exported_latency_0.25_over_1.0":
                                rows[0.25]["ms"]["exported"] / rows[1.0]["ms"]["exported"],
                            "multiply_adds_0.25_over_1.0": rows[0.25]["multiply_adds"] / rows[1.0]["multiply_adds"]})
    report({"benchmark": "overhead", "input": args.size, "rows": results, **environment()})


def _uncached(net, x):
    def run():
        net.eval_cache = False
        try:
            return net(x)
        finally:
            net.eval_cache = True
    return run


def _timed(candidates, repeats, device):
    if device.type == "cuda":
        candidates = {k: (lambda fn=fn: (fn(), torch.cuda.synchronize())) for k, fn in candidates.items()}
    return interleaved(candidates, repeats, warmup=2)


if __name__ == "__main__":
    main()
