"""Run by test_calibrate.py under torchrun (2 ranks) or alone: calibrates width 0.5 of the
tiny model from 64 training images and writes one layer's statistics."""

import json
import sys
from pathlib import Path

import torch

import usconvert
from usconvert.calibrate import calibrate
from usconvert.data import calibration_loader, fake
from usconvert.distributed import setup, teardown

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
dist, device = setup("cpu")
torch.manual_seed(0)
model, source = usconvert.create(f"{Path(__file__).parent / 'data' / 'tiny.py'}:tiny", num_classes=10)
net = usconvert.convert(model, (3, 16, 16), source=source)
splits = fake(80, (3, 16, 16), 10)
loader = calibration_loader(splits, 8, seed=0, num_replicas=dist.world_size, rank=dist.rank)
report = calibrate(net, loader, [0.5], samples=64 // dist.world_size,
                   reduce=dist.sum_tensors if dist.enabled else None)
net.set_width(0.5)
stats = net.layers["1"].width_statistics
if dist.is_main:
    (out / "stats.json").write_text(json.dumps({"samples": report.samples * dist.world_size,
                                                "mean": stats.running_mean.tolist(),
                                                "var": stats.running_var.tolist()}))
teardown()
