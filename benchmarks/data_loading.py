"""Loading one augmented training batch of Fashion-MNIST (the examples/paper setting: 32x32,
3 channels, random resized crops of 0.8 to 1.0 of the area), on one thread, in the loader's
own process: torchvision's RandomResizedCrop one image a call (the path of every run trained
before usconvert.augment) against RandomResizedCrops, a batch at once (the path now). Both
through SeededTransform and a DataLoader, measured in one run, interleaved.

    python benchmarks/data_loading.py [--batch 128 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, interleaved, report  # noqa: E402

from usconvert.data import DataConfig, SeededTransform, load_data  # noqa: E402

SIZE = (32, 32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    train = load_data("fashion-mnist", (3, *SIZE), DataConfig(), num_classes=10).train
    crops = train.transform  # what training uses; torchvision's transform with the same scale and ratio
    images = train.base
    paths = {"per image": v2.RandomResizedCrop(SIZE, scale=crops.scale, ratio=crops.ratio, antialias=True),
             "batched": crops}
    rows = []
    for batch in args.batch:
        loaders = {name: DataLoader(SeededTransform(images, transform, seed=0), batch_size=batch, shuffle=True)
                   for name, transform in paths.items()}
        iterators = {name: iter(loader) for name, loader in loaders.items()}
        seconds = interleaved({name: (lambda it=it: next(it)) for name, it in iterators.items()}, args.repeats)
        row = {"batch": batch, **{f"{name} ms/image": s / batch * 1e3 for name, s in seconds.items()},
               "per image / batched": seconds["per image"] / seconds["batched"]}
        rows.append(row)
        print(row, file=sys.stderr)
    report({"environment": environment(), "rows": rows})


if __name__ == "__main__":
    main()
