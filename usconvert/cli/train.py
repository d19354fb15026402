"""``usconvert train``: the sandwich rule and inplace distillation on real data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, reports_errors
from .options import DATA_HELP, output_path


@reports_errors
def train(
    network: Path = typer.Argument(..., help="A converted network (.safetensors) to train."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the trained network; a checkpoint "
                                                            "and a JSON-lines log are written next to it."),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP + " Default: digits."),
    train_samples: Optional[int] = typer.Option(None, "--train-samples", help="Train on N images of the training "
                                                "split, drawn once with --seed (default: all)."),
    val_samples: Optional[int] = typer.Option(None, "--val-samples", help="Validate on N images of the "
                                              "validation split, drawn once with --seed (default: all)."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="A YAML recipe; flags given here override it."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "-b", "--batch-size", help="Per process."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    opt: Optional[str] = typer.Option(None, "--opt", help="timm optimizer name (sgd: Nesterov momentum)."),
    momentum: Optional[float] = typer.Option(None, "--momentum"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Not applied to depthwise weights, "
                                                 "norms and biases."),
    sched: Optional[str] = typer.Option(None, "--sched", help="linear (the paper: to 0 per iteration), cosine, "
                                        "step, multistep, poly, tanh, constant."),
    warmup_epochs: Optional[int] = typer.Option(None, "--warmup-epochs"),
    warmup_lr: Optional[float] = typer.Option(None, "--warmup-lr"),
    min_lr: Optional[float] = typer.Option(None, "--min-lr"),
    smoothing: Optional[float] = typer.Option(None, "--smoothing", help="Label smoothing of the largest width."),
    val_calibration: Optional[int] = typer.Option(None, "--val-calibration", help="Validate each epoch's smallest "
                                                  "width with batch-norm statistics recomputed from N training "
                                                  "images (default 0: those tracked during training)."),
    widths_per_step: Optional[int] = typer.Option(None, "--widths-per-step", help="n: widths trained per step "
                                                  "(default 4)."),
    sampling: Optional[str] = typer.Option(None, "--sampling", help="sandwich (default), random, min-random, "
                                           "max-random (the paper's Table 2)."),
    inplace_distill: Optional[bool] = typer.Option(None, "--inplace-distill/--no-inplace-distill",
                                                   help="Smaller widths learn from the largest width's output "
                                                        "(default on)."),
    distill_loss: Optional[str] = typer.Option(None, "--distill-loss", help="soft-ce (default), kl, l1, l2."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Distil every width, the largest too, from a "
                                          "frozen teacher: 'original' (NETWORK as it is before training: the "
                                          "converted model's own function) or a network or exported model file. "
                                          "Replaces inplace distillation."),
    kd_ratio: Optional[float] = typer.Option(None, "--kd-ratio", help="Weight of the teacher's term next to the "
                                             "labels (default 1.0)."),
    kd_temperature: Optional[float] = typer.Option(None, "--kd-temperature", help="Softmax temperature of the "
                                                   "teacher's term (default 1.0)."),
    nonuniform: Optional[bool] = typer.Option(None, "--nonuniform/--uniform", help="Random widths draw a ratio "
                                              "per channel space."),
    widths: Optional[str] = typer.Option(None, "--widths", help="Baselines: train exactly these widths every "
                                         "step instead of sampling (0.5: an individual model; 1,0.75,0.5,0.25 "
                                         "with --private-norms: a 4-switch S-Net)."),
    private_norms: Optional[bool] = typer.Option(None, "--private-norms/--shared-norms", help="Private batch-norm "
                                                 "weight and bias per --widths entry (switchable batch norm)."),
    output_averaging: Optional[bool] = typer.Option(None, "--output-averaging", help="Each dense convolution "
                                                    "averages its output over its active input channels (the "
                                                    "paper's Table 4; linear layers are left alone, as in the "
                                                    "paper's code; saved with the network)."),
    scale_min: Optional[float] = typer.Option(None, "--scale-min", help="Random-resized-crop scale lower bound "
                                              "(default 0.25; 0.8 for digits)."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision (bf16 on CPU, fp16 on CUDA)."),
    amp_dtype: Optional[str] = typer.Option(None, "--amp-dtype", help="bfloat16 or float16."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC memory "
                                                 "layout for weights and images: the same function, faster "
                                                 "convolutions on CPUs and tensor-core GPUs."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda."),
    workers: Optional[int] = typer.Option(None, "-j", "--workers", help="Data loader processes."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn/--no-sync-bn", help="Synchronise batch norm across "
                                           "processes (small per-process batches)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="A checkpoint to continue from."),
) -> None:
    """Train a converted network as a US-Net (sandwich rule, inplace distillation). Runs
    distributed under torchrun: torchrun --nproc_per_node=N -m usconvert train ..."""
    from ..distributed import teardown
    from ..serialize import load
    from ..train import Trainer, make_config
    from ..train.checkpoint import checkpoint_path, log_path
    from ..width import parse_widths
    config = make_config(
        recipe, data=data, train_samples=train_samples, val_samples=val_samples, epochs=epochs, batch_size=batch_size,
        lr=lr, opt=opt, momentum=momentum,
        weight_decay=weight_decay, sched=sched, warmup_epochs=warmup_epochs, warmup_lr=warmup_lr, min_lr=min_lr,
        smoothing=smoothing, val_calibration=val_calibration, widths_per_step=widths_per_step, sampling=sampling,
        inplace_distill=inplace_distill,
        distill_loss=distill_loss, teacher=teacher, kd_ratio=kd_ratio, kd_temperature=kd_temperature,
        nonuniform=nonuniform, widths=parse_widths(widths) if widths else None,
        private_norms=private_norms, output_averaging=output_averaging, scale_min=scale_min, amp=amp,
        amp_dtype=amp_dtype, channels_last=channels_last,
        device=device, workers=workers, seed=seed, sync_bn=sync_bn)
    output_path(output)
    net = load(network)
    try:
        trainer = Trainer(net, config, output, resume=resume, console=console)
        trainer.fit()
    finally:
        teardown()
    if trainer.dist.is_main:
        console.print(f"wrote {output} (checkpoint {checkpoint_path(output)}, log {log_path(output)})")
