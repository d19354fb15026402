"""The trainer: Algorithm 1 of the paper for any converted network, on real data, resumable
and distributed."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from ..clips import forward_videos
from ..data import DataConfig, SeededTransform, eval_loader, load_data, subset, train_loader
from ..errors import TrainingInterrupted
from ..net import SlimmableNet
from ..nn import SlimBatchNorm, make_slimmable, original_class
from ..serialize import load_into, save
from . import checkpoint as ckpt
from .config import ConfigError, TrainConfig
from ..distributed import setup
from .losses import DISTILL_LOSSES, Loss, TeacherDistillation, label_loss
from .optim import create_optimizer, create_scheduler
from .sampling import WidthSampler
from .step import NonFiniteLossError, non_finite, sandwich_step
from .teacher import build_teacher

# Settings that may change between a checkpoint and its resumption without changing the run.
RESUME_FREE = {"workers", "device", "channels_last"}
# Settings that shape the learning-rate schedule: when one changes on resume, the schedule is
# built anew for the new settings at the step reached (as timm's train.py does on --resume).
SCHEDULE_SETTINGS = {"epochs", "sched", "lr", "warmup_epochs", "warmup_lr", "min_lr", "batch_size"}


class Trainer:
    def __init__(self, net: SlimmableNet, config: TrainConfig, output: str | Path | None = None, *,
                 resume: str | Path | None = None, criterion: Loss | None = None,
                 console: Console | None = None, on_step: Callable[["Trainer"], None] | None = None,
                 teacher: nn.Module | None = None):
        """``teacher``: a frozen module to distil from, instead of ``config.teacher`` (which is
        built from ``net`` as it is when the trainer is made, or from a file)."""
        config.check()
        self.config = config
        self.net = net
        self.output = Path(output) if output is not None else None
        self.console = console or Console(stderr=True)
        self.dist, self.device = setup(config.device)
        if config.sync_bn and self.dist.enabled and self.device.type != "cuda":
            raise ConfigError("--sync-bn synchronises batch norm across GPUs; torch does not support it on CPU")
        self._check_expectations()
        torch.manual_seed(config.seed + self.dist.rank)

        self.splits = subset(load_data(config.data, net.input_size, DataConfig(**(net.data_config or {})),
                                       num_classes=self._output_classes(), scale_min=config.scale_min,
                                       seed=config.seed),
                             train=config.train_samples, val=config.val_samples, seed=config.seed)
        if self.splits.num_classes != self._output_classes():
            raise ConfigError(
                f"the network has {self._output_classes()} outputs but {self.splits.name} has "
                f"{self.splits.num_classes} classes; convert the model with --num-classes {self.splits.num_classes}")
        self.train_loader = train_loader(self.splits.train, config.batch_size, seed=config.seed,
                                         num_replicas=self.dist.world_size, rank=self.dist.rank, workers=config.workers)
        self.val_loader = eval_loader(self.splits.val, config.batch_size, num_replicas=self.dist.world_size,
                                      rank=self.dist.rank, workers=config.workers)

        net.to(self.device)
        if config.channels_last:
            net.to(memory_format=torch.channels_last)  # weights loaded on resume are copied into this layout
        if config.sync_bn:
            self._use_sync_batch_norm()
        if config.widths is not None:
            for width in config.widths:
                net.set_width(width)  # a width outside the network's range fails here, before training
            net.set_width(1.0)
        net.track_statistics(list(config.widths or [net.min_width]))
        if config.private_norms:
            net.privatize_norms(config.widths)
        if config.output_averaging:
            net.output_averaging = True
        # validated as training goes: the min and max widths (the paper), or those of a baseline
        self.validation_widths = ((1.0, net.min_width) if config.widths is None
                                  else (max(config.widths), min(config.widths)))
        self.model: nn.Module = net
        if self.dist.enabled:
            # a switch's private batch-norm weights get no gradient at the other switches
            self.model = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.private_norms)
        self.optimizer = create_optimizer(net, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay,
                                          momentum=config.momentum)
        self.scheduler = create_scheduler(self.optimizer, sched=config.sched, epochs=config.epochs,
                                          updates_per_epoch=len(self.train_loader), warmup_epochs=config.warmup_epochs,
                                          warmup_lr=config.warmup_lr, min_lr=config.min_lr)
        self.autocast, self.scaler = self._precision()
        self.sampler = WidthSampler(net.min_width, config.widths_per_step, config.sampling, config.nonuniform,
                                    config.seed, fixed=config.widths)
        self.criterion = criterion or label_loss(config.smoothing)
        self.distill = DISTILL_LOSSES[config.distill_loss] if config.inplace_distill else None
        # the teacher is the network before any step: built before a checkpoint is loaded into it
        if teacher is None and config.teacher is not None:
            teacher = build_teacher(config.teacher, net)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        if self.teacher is not None:
            self.distill = TeacherDistillation(config.distill_loss, config.kd_ratio, config.kd_temperature)
        self.progress = ckpt.Progress()
        self.history: list[dict[str, Any]] = []
        self._stop_requested = False
        self._epoch_began = time.perf_counter()
        self.on_step = on_step  # called after every optimizer step (logging, tests)
        if resume is not None:
            self._resume(Path(resume))
        elif self.output is not None and self.dist.is_main:
            aside = ckpt.set_aside(ckpt.log_path(self.output))  # a fresh run starts a fresh log
            if aside is not None:
                self.console.print(f"an earlier run's log is kept as {aside}")

    # -- setup -------------------------------------------------------------------------------
    def _output_classes(self) -> int:
        if not hasattr(self, "_classes"):
            was_training, width = self.net.training, self.net.width
            self.net.eval()
            self.net.set_width(1.0)
            with torch.no_grad():
                p = next(self.net.parameters())
                out = self.net(torch.zeros(1, *self.net.input_size, device=p.device, dtype=p.dtype))
            self.net.train(was_training)
            self.net.set_width(width)
            self._classes = out.shape[-1]
        return self._classes

    def _check_expectations(self) -> None:
        expect = self.config.expect
        for key, actual in (("min_width", self.net.min_width), ("divisor", self.net.divisor)):
            if key in expect and float(expect[key]) != float(actual):
                raise ConfigError(f"the recipe expects a network converted with --{key.replace('_', '-')} "
                                  f"{expect[key]}, this one has {actual}")

    def _precision(self) -> tuple[Callable[[], contextlib.AbstractContextManager], Any]:
        if not self.config.amp:
            return contextlib.nullcontext, None
        dtype_name = self.config.amp_dtype or ("float16" if self.device.type == "cuda" else "bfloat16")
        dtype = getattr(torch, dtype_name)
        scaler = torch.amp.GradScaler(self.device.type) if dtype == torch.float16 else None
        return (lambda: torch.autocast(self.device.type, dtype=dtype)), scaler

    def _use_sync_batch_norm(self) -> None:
        for layer in self.net.batch_norm_layers().values():
            if original_class(layer) is nn.BatchNorm2d:
                make_slimmable(layer, SlimBatchNorm, base=nn.SyncBatchNorm, channels=layer.channel_layout,
                               dim=layer.channel_layout_dim)
                layer.process_group = None
        self.net.set_width(self.net.width)

    def _resume(self, path: Path) -> None:
        state = ckpt.read_checkpoint(path)
        changed = {k for k, v in dataclasses.asdict(self.config).items()
                   if k not in RESUME_FREE and state.config.get(k, v) != v}
        if changed:
            self.console.print(f"[yellow]warning:[/] resuming with changed settings: {', '.join(sorted(changed))}")
        load_into(self.net, path)
        self.net.to(self.device)
        self.optimizer.load_state_dict(state.state["optimizer"])
        self.progress = state.progress
        if changed & SCHEDULE_SETTINGS:
            # the optimizer's restored learning rate is the old schedule's (0 at the end of a
            # linear one): the new schedule sets it for the step reached
            self.scheduler.step_update(num_updates=self.progress.step)
            self.console.print(f"the learning-rate schedule is rebuilt for {self.config.epochs} epochs: "
                               f"lr {self.optimizer.param_groups[0]['lr']:.4g} at step {self.progress.step}")
        else:
            self.scheduler.load_state_dict(state.state["scheduler"])
        if self.scaler is not None and state.state["scaler"]:
            self.scaler.load_state_dict(state.state["scaler"])
        rng = state.rng_states(self.dist.rank, self.dist.world_size)
        if rng is not None:
            ckpt.restore_rng_states(rng)
        else:
            self.console.print("[yellow]warning:[/] the checkpoint was written by another number of processes: "
                               "random states start afresh from --seed")
        self.history = [record for record in state.history if record["epoch"] <= self.progress.epoch]
        if self.output is not None and self.dist.is_main:
            ckpt.write_log(ckpt.log_path(self.output), self.history)  # the log on disk matches the checkpoint

    # -- running -----------------------------------------------------------------------------
    def fit(self, stop_after_steps: int | None = None) -> list[dict[str, Any]]:
        """Train to the last epoch. ``stop_after_steps`` stops early as Ctrl-C does: after a
        whole step, with a checkpoint (for tests and time-boxed jobs)."""
        previous_handler = self._install_interrupt_handler()
        try:
            if self.dist.is_main and self.progress.epoch < self.config.epochs:
                what = (f"widths {', '.join(f'{w:g}' for w in self.config.widths)}" if self.config.widths
                        else f"{self.config.widths_per_step} widths per step ({self.config.sampling})")
                self.console.print(f"training from epoch {self.progress.epoch + 1} of {self.config.epochs}: {what}, "
                                   f"{len(self.train_loader)} steps per epoch on {self.dist.world_size} x "
                                   f"{self.device.type} (Ctrl-C stops after the step in progress, with a checkpoint)")
            while self.progress.epoch < self.config.epochs:
                self._epoch_began = time.perf_counter()
                record = self._train_epoch(stop_after_steps)
                record.update(self.validate())
                seconds = self.progress.seconds + time.perf_counter() - self._epoch_began
                record["elapsed_s"] = seconds  # of the whole run so far, resumed or not
                self.history.append(record)
                self.progress = ckpt.Progress(self.progress.epoch + 1, 0, self.progress.step, seconds)
                self._write_epoch(record)
            if self.output is not None and self.dist.is_main:
                save(self.net, self.output)
            self.dist.barrier()
            return self.history
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)

    def _install_interrupt_handler(self) -> Any:
        import threading
        if threading.current_thread() is not threading.main_thread():
            return None

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_requested:  # a second Ctrl-C stops at once
                raise KeyboardInterrupt
            self._stop_requested = True

        return signal.signal(signal.SIGINT, request_stop)

    def _train_epoch(self, stop_after_steps: int | None) -> dict[str, Any]:
        config, net = self.config, self.net
        epoch = self.progress.epoch
        self.train_loader.sampler.set_epoch(epoch)
        self.train_loader.sampler.start = self.progress.batch * config.batch_size
        if isinstance(self.splits.train, SeededTransform):
            self.splits.train.set_epoch(epoch)
        spaces = [s.name for s in net.slimmable_spaces]
        totals = {"loss_largest": 0.0, "loss_smallest": 0.0, "images": 0, "batches": 0}
        batches = len(self.train_loader) + self.progress.batch
        start = time.perf_counter()
        self.model.train()
        with self._progress_bar() as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=batches, completed=self.progress.batch,
                                status="starting")
            for inputs, targets in self.train_loader:
                inputs, targets = self._on_device(inputs), targets.to(self.device, non_blocking=True)
                widths = self.sampler.sample(self.progress.step, spaces)
                self.optimizer.zero_grad(set_to_none=True)
                losses = self._step(inputs, targets, widths)
                self.progress.step += 1
                self.progress.batch += 1
                self.scheduler.step_update(num_updates=self.progress.step)
                largest, smallest = _extremes(widths, losses)
                totals["loss_largest"] += largest
                totals["loss_smallest"] += smallest
                totals["images"] += inputs.shape[0] * self.dist.world_size
                totals["batches"] += 1
                speed = totals["images"] / (time.perf_counter() - start)
                bar.update(task, advance=1, status=f"loss largest {largest:.3f} smallest {smallest:.3f} "
                                                   f"{speed:.0f} img/s")
                if self.on_step is not None:
                    self.on_step(self)
                stop = self._stop_requested or (stop_after_steps is not None and self.progress.step >= stop_after_steps)
                if self.dist.any(stop, self.device):
                    self.progress.seconds += time.perf_counter() - self._epoch_began
                    self._checkpoint()
                    where = ckpt.checkpoint_path(self.output) if self.output else "memory"
                    raise TrainingInterrupted(f"stopped at epoch {epoch + 1}, step {self.progress.step}; "
                                              f"resume with --resume {where}")
        seen = max(1, totals["batches"])
        elapsed = time.perf_counter() - start
        return {"epoch": epoch + 1, "step": self.progress.step, "lr": self.optimizer.param_groups[0]["lr"],
                "loss_largest": totals["loss_largest"] / seen, "loss_smallest": totals["loss_smallest"] / seen,
                "images_per_s": totals["images"] / elapsed if elapsed else 0.0, "time_s": elapsed}

    def _on_device(self, inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.to(self.device, non_blocking=True)
        if self.config.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def _step(self, inputs: torch.Tensor, targets: torch.Tensor, widths: list) -> list[float]:
        backward = (lambda loss: self.scaler.scale(loss).backward()) if self.scaler else torch.Tensor.backward
        teacher_output = None
        if self.teacher is not None:
            with torch.no_grad(), self.autocast():
                teacher_output = self.teacher(inputs).float()
        try:
            losses = sandwich_step(self.model, self.net, inputs, targets, widths, criterion=self.criterion,
                                   distill=self.distill, autocast=self.autocast, backward=backward,
                                   raise_on_non_finite=False, teacher_output=teacher_output)
        finally:
            self.net.set_width(1.0)
        problem = non_finite(widths, losses)
        if self.dist.any(problem is not None, self.device):  # every rank stops at the same step
            kept = ckpt.checkpoint_path(self.output) if self.output else None
            where = f"; the last good checkpoint is {kept}" if kept and kept.is_file() else ""
            problem = problem or "the loss became non-finite on another process"
            raise NonFiniteLossError(f"training stopped at epoch {self.progress.epoch + 1}, step "
                                     f"{self.progress.step + 1}: {problem}{where} (try a lower --lr)")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return losses

    def _progress_bar(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                        console=self.console, disable=not self.dist.is_main, transient=False)

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Top-1/top-5 accuracy (%) and loss at the largest and smallest width, in eval mode.
        Below width 1.0 batch norm uses the statistics tracked during training, or, with
        ``val_calibration``, statistics recomputed from that many training images for this
        validation only (BN post-statistics; the tracked ones are given back afterwards)."""
        results: dict[str, Any] = {"val_statistics": self._validation_statistics()}
        self.model.eval()
        with self._calibrated_for_validation():
            measured: dict[float, tuple[float, float, float]] = {}  # a baseline's one width is measured once
            for label, width in zip(("max", "min"), self.validation_widths):
                if width not in measured:
                    measured[width] = self._validate_width(width)
                top1, top5, loss = measured[width]
                results.update({f"val_top1_{label}": top1, f"val_top5_{label}": top5, f"val_loss_{label}": loss})
        self.net.set_width(1.0)
        self.model.train()
        return results

    def _validate_width(self, width: float) -> tuple[float, float, float]:
        """Top-1 and top-5 accuracy (%) and mean loss on the validation split at ``width``."""
        self.net.set_width(width)
        counts = [0.0, 0.0, 0.0, 0.0]  # top-1, top-5, loss sum, images
        for inputs, targets in self.val_loader:
            inputs, targets = self._on_device(inputs), targets.to(self.device)
            with self.autocast():
                output = forward_videos(self.net, inputs, len(self.net.input_size))
            top = output.float().topk(min(5, output.shape[-1]), dim=-1).indices
            hits = top == targets[:, None]
            counts[0] += hits[:, 0].sum().item()
            counts[1] += hits.any(-1).sum().item()
            counts[2] += nn.functional.cross_entropy(output.float(), targets, reduction="sum").item()
            counts[3] += inputs.shape[0]
        top1, top5, loss, n = self.dist.sum(counts, self.device)
        return 100 * top1 / n, 100 * top5 / n, loss / n

    def _validation_statistics(self) -> str:
        if all(width == 1.0 for width in self.validation_widths) or not self.net.batch_norm_layers():
            return "own"
        if self.config.val_calibration:
            return f"calibrated from {self.config.val_calibration} training images"
        return "tracked during training"

    @contextlib.contextmanager
    def _calibrated_for_validation(self) -> Any:
        widths = [w for w in self.validation_widths if w != 1.0]
        if not self.config.val_calibration or not widths or not self.net.batch_norm_layers():
            yield
            return
        from ..calibrate import calibrate
        from ..data import calibration_loader
        store = self.net.statistics
        keys = set(store.labels())
        kept = {name: tensor.clone() for name, tensor in store.tensors().items()}
        loader = calibration_loader(self.splits, self.config.batch_size, seed=self.config.seed,
                                    num_replicas=self.dist.world_size, rank=self.dist.rank, workers=self.config.workers)
        calibrate(self.net, loader, widths, samples=-(-self.config.val_calibration // self.dist.world_size),
                  device=self.device, reduce=self.dist.sum_tensors if self.dist.enabled else None)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in store.tensors().items():
                    if name in kept:
                        tensor.copy_(kept[name])
            for key in set(store.labels()) - keys:
                del store.entries[key]
            store.version += 1

    def _write_epoch(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            high, low = self.validation_widths
            accuracies = f"{record['val_top1_max']:.1f}% at {high:g}"
            if low != high:
                accuracies += f", {record['val_top1_min']:.1f}% at {low:g}"
            if record["val_statistics"] != "own":
                accuracies += f" ({record['val_statistics']})"
            self.console.print(f"epoch {record['epoch']}: val top-1 {accuracies}; "
                               f"loss {record['loss_largest']:.3f} / {record['loss_smallest']:.3f} (largest / "
                               f"smallest width); {record['images_per_s']:.0f} img/s")
        self._checkpoint()
        if self.output is not None and self.dist.is_main:
            ckpt.write_log(ckpt.log_path(self.output), self.history)

    def _checkpoint(self) -> None:
        """Every rank takes part (their RNG states are gathered); rank 0 writes, and no rank goes
        on (or exits) before the file is complete."""
        if self.output is None:
            return
        states = self.dist.gather(ckpt.rng_states())
        if self.dist.is_main:
            ckpt.save_checkpoint(ckpt.checkpoint_path(self.output), self.net, optimizer=self.optimizer,
                                 scheduler=self.scheduler, scaler=self.scaler, progress=self.progress,
                                 config=dataclasses.asdict(self.config), history=self.history,
                                 rank_rng_states=states)
        self.dist.barrier()


def _extremes(widths: list, losses: list[float]) -> tuple[float, float]:
    """The losses of the largest and the smallest width trained in a step (a nonuniform width
    counts by its mean ratio)."""
    def size(width: Any) -> float:
        return float(width) if not isinstance(width, dict) else sum(width.values()) / max(1, len(width))
    order = sorted(range(len(widths)), key=lambda i: size(widths[i]))
    return losses[order[-1]], losses[order[0]]
