"""Run by test_train.py, under torchrun (2 ranks, per-rank batch 8) or alone (batch 16):
trains the batch-norm-free tiny model on the same data and records what each rank saw."""

import hashlib
import json
import sys
from pathlib import Path

import torch

import usconvert
from usconvert.train import Trainer, make_config

out, batch = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
torch.manual_seed(0)
model, source = usconvert.create(f"{Path(__file__).parent / 'data' / 'tiny.py'}:tiny_no_bn", num_classes=10)
net = usconvert.convert(model, (3, 16, 16), source=source)
checksums = []


def record(trainer: Trainer) -> None:
    digest = hashlib.sha256()
    for p in trainer.net.parameters():
        digest.update(p.detach().cpu().numpy().tobytes())
    checksums.append(digest.hexdigest())


trainer = Trainer(net, make_config(data="fake:160", epochs=2, batch_size=batch, lr=0.05, seed=3),
                  out / "out.safetensors", on_step=record)
trainer.train_loader.sampler.set_epoch(0)
indices = list(trainer.train_loader.sampler)
trainer.fit()
(out / f"rank{trainer.dist.rank}.json").write_text(json.dumps(
    {"indices": indices, "checksums": checksums, "steps": trainer.progress.step}))
