"""Run by test_train.py under torchrun (2 ranks): the distributed cases that a BN-free model does
not cover. ``python ddp_modes_worker.py OUT MODE``:

- ``snet``: a 4-switch S-Net (private batch norm per switch) for one epoch, recording each
  rank's batches, so that the test can replay the averaged gradients in one process;
- ``straight``: the tiny model with dropout for two epochs;
- ``stop``: the same, stopped after 3 steps while rank 0 is slow to write its checkpoint;
- ``resume``: the stopped run resumed from its checkpoint.
"""

import json
import sys
import time
from pathlib import Path

import torch

import usconvert
from helpers import without_dropout
from usconvert.train import Trainer, TrainingInterrupted, make_config
from usconvert.train import checkpoint as ckpt

out, mode = Path(sys.argv[1]), sys.argv[2]
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
torch.manual_seed(0)
model, source = usconvert.create(f"{Path(__file__).parent / 'data' / 'tiny.py'}:tiny", num_classes=10)
net = usconvert.convert(model, (3, 16, 16), source=source)

if mode == "snet":
    without_dropout(net)  # the replay cannot draw the ranks' masks
    usconvert.save(net, out / "initial.safetensors")
    config = make_config(data="fake:160", epochs=1, batch_size=8, lr=0.05, seed=3, widths=[1.0, 0.75, 0.5, 0.25],
                         private_norms=True)
    trainer = Trainer(net, config, out / "snet.safetensors")
    trainer.train_loader.sampler.set_epoch(0)
    indices = list(trainer.train_loader.sampler)
    trainer.fit()
    (out / f"snet_rank{trainer.dist.rank}.json").write_text(json.dumps({"indices": indices}))
    sys.exit(0)

config = make_config(data="fake:160", epochs=2, batch_size=8, lr=0.05, seed=5)
target = out / "run.safetensors"
if mode == "straight":
    Trainer(net, config, target).fit()
elif mode == "stop":
    real_save = ckpt.save_checkpoint

    def slow_save(*args, **kwargs):  # widen the window in which another rank could exit first
        time.sleep(3)
        real_save(*args, **kwargs)

    ckpt.save_checkpoint = slow_save
    try:
        Trainer(net, config, target).fit(stop_after_steps=3)
    except TrainingInterrupted:
        sys.exit(2)  # as the command line does: torchrun then stops the ranks still running
elif mode == "resume":
    torch.manual_seed(999)  # a new process: nothing but the checkpoint carries the random states
    Trainer(net, config, target, resume=ckpt.checkpoint_path(target)).fit()
