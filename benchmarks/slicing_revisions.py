"""The slicing path (``eval_cache = False``: what training runs) of this checkout against an
earlier revision of usconvert, in one process, interleaved: the revision's package is
extracted with ``git archive`` and imported under another name. An eval forward at batch 1
(per-layer Python overhead dominates) and a train forward+backward at batch 8, at one width.

    python benchmarks/slicing_revisions.py --base 1a9f229 [--model mobilenetv2_100] [--width 0.5] [--size 64]
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, interleaved, report  # noqa: E402

import usconvert  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def import_revision(revision: str, into: Path) -> object:
    """usconvert as of ``revision``, imported as ``usconvert_base`` (its imports are relative)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "usconvert"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "usconvert").rename(into / "usconvert_base")
    sys.path.insert(0, str(into))
    return importlib.import_module("usconvert_base")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare against")
    parser.add_argument("--model", default="mobilenetv2_100")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        packages = {"this checkout": usconvert, args.base: import_revision(args.base, Path(tmp))}
        nets = {}
        for label, package in packages.items():
            torch.manual_seed(0)
            net = package.convert(timm.create_model(args.model, num_classes=10), (3, args.size, args.size))
            net.eval_cache = False
            net.set_width(args.width)
            nets[label] = net
        one, eight = torch.randn(1, 3, args.size, args.size), torch.randn(8, 3, args.size, args.size)

        def eval_forward(net: object) -> None:
            net.eval()
            with torch.no_grad(), net.sliced_statistics():
                net(one)

        def train_step(net: object) -> None:
            net.train()
            net(eight).sum().backward()

        rows = []
        for name, step in (("eval forward, batch 1", eval_forward), ("train forward+backward, batch 8", train_step)):
            seconds = interleaved({label: (lambda n=net: step(n)) for label, net in nets.items()}, args.repeats)
            rows.append({"step": name, "seconds": seconds,
                         "this_over_base": seconds["this checkout"] / seconds[args.base]})
        report({"benchmark": "slicing path against a revision", "model": args.model, "width": args.width,
                "size": args.size, "base": args.base, "repeats": args.repeats, "rows": rows, **environment()})


if __name__ == "__main__":
    main()
