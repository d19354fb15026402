"""BN post-statistics (paper Section 3.2): after training, batch-norm statistics are computed
for each width from a few training samples, in train mode and without gradients.

``exact`` is the cumulative average of Eq. 8 (the mean of the per-batch means and variances);
``moving`` is the momentum recursion of Eq. 5. Each batch-norm layer runs in train mode on
scratch running tensors with momentum 1, which then hold that batch's statistics (computed by
the layer's own kernel, at no extra cost); the layers' real statistics are not touched while
computing. Each batch is loaded (and transformed) once and run through every width.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch

from .errors import UsconvertError
from .net import SlimmableNet, Width
from .nn import SlimBatchNorm, WidthStatistics
from .width import width_grid

MODES = ("exact", "moving")


@dataclass
class CalibrationReport:
    widths: dict[str, str] = field(default_factory=dict)  # configuration key -> label
    samples: int = 0
    batches: int = 0
    mode: str = "exact"
    seconds: float = 0.0
    message: str = ""


class _Accumulator:
    """Per-layer statistics of one width, from the batch statistics each layer computed."""

    def __init__(self, mode: str, momentum: float):
        self.mode, self.momentum = mode, momentum
        self.sums: dict[str, list] = {}

    def add(self, layer: str, mean: torch.Tensor, var: torch.Tensor) -> None:
        entry = self.sums.get(layer)
        if entry is None:
            if self.mode == "exact":
                self.sums[layer] = [mean.clone(), var.clone(), 1]
            else:  # Eq. 5 from a fresh layer's statistics (mean 0, variance 1)
                self.sums[layer] = [self.momentum * mean, (1 - self.momentum) + self.momentum * var, 1]
        elif self.mode == "exact":
            entry[0] += mean
            entry[1] += var
            entry[2] += 1
        else:
            entry[0].mul_(1 - self.momentum).add_(mean, alpha=self.momentum)
            entry[1].mul_(1 - self.momentum).add_(var, alpha=self.momentum)
            entry[2] += 1

    def result(self, reduce: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None
               ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for layer, (mean, var, count) in self.sums.items():
            if self.mode == "exact":
                if reduce is not None:  # exact across ranks: sum the sums and the counts
                    mean, var, total = reduce([mean, var, torch.tensor(float(count), device=mean.device)])
                    count = total.item()
                out[layer] = (mean / count, var / count)
            else:
                if reduce is not None:
                    mean, var, world = reduce([mean, var, torch.ones((), device=mean.device)])
                    mean, var = mean / world, var / world
                out[layer] = (mean, var)
        return out


def calibrate(net: SlimmableNet, batches: Iterable, widths: list[float] | None = None, *,
              configs: Mapping[str, Mapping[str, float]] | None = None, samples: int = 1024, mode: str = "exact",
              momentum: float = 0.1, device: torch.device | str | None = None,
              reduce: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
              on_batch: Callable[[int], None] | None = None) -> CalibrationReport:
    """Compute and store batch-norm statistics for each width (default: ``min_width`` to 1.0 in
    steps of 0.025) and each named nonuniform configuration, from ``samples`` images of
    ``batches`` (an iterable of ``(inputs, ...)``). ``reduce`` sums a list of tensors across
    processes. Returns what was calibrated."""
    if mode not in MODES:
        raise UsconvertError(f"calibration mode must be exact or moving, got {mode!r}")
    if samples < 1:
        raise UsconvertError("calibration needs at least one sample")
    layers = {name: layer for name, layer in net.batch_norm_layers().items() if layer.track_running_stats}
    report = CalibrationReport(mode=mode)
    if not layers:
        report.message = "the network has no batch norm with running statistics: nothing to calibrate"
        return report
    targets = _targets(net, widths, configs)
    accumulators = {key: _Accumulator(mode, momentum) for key in targets}
    device = device or next(net.parameters()).device
    captures = _capture_buffers(net, targets, layers, device)
    previous, was_training = net.width, net.training
    start = time.perf_counter()
    try:
        net.train()
        with net.batch_statistics_only(), torch.no_grad():
            for batch in batches:
                inputs = (batch[0] if isinstance(batch, (list, tuple)) else batch)[: samples - report.samples]
                inputs = inputs.to(device)
                for key, (_, width) in targets.items():
                    net.set_width(width)
                    for name, capture in captures[key].items():  # momentum 1: the batch's statistics
                        layers[name].width_statistics = capture
                    net(inputs)
                    for name, capture in captures[key].items():
                        accumulators[key].add(name, capture.running_mean, capture.running_var)
                report.samples += inputs.shape[0]
                report.batches += 1
                if on_batch is not None:
                    on_batch(inputs.shape[0])
                if report.samples >= samples:
                    break
    finally:
        net.set_width(previous)
        net.train(was_training)
    if report.samples == 0:
        raise UsconvertError("no samples to calibrate with: the data is empty")
    for key, (label, width) in targets.items():
        _store(net, key, label, width, accumulators[key].result(reduce))
        report.widths[key] = label
    net.set_width(previous)
    report.seconds = time.perf_counter() - start
    return report


def _targets(net: SlimmableNet, widths: list[float] | None,
             configs: Mapping[str, Mapping[str, float]] | None) -> dict[str, tuple[str, Width]]:
    """Configuration key -> (label, width); ratios that give the same channels share one entry."""
    if widths is None and not configs:
        widths = width_grid(net.min_width, 1.0, 0.025)
    targets: dict[str, tuple[str, Width]] = {}
    previous = net.width
    try:
        for width in widths or []:
            net.set_width(width)
            targets.setdefault(net.configuration_key(), (f"{float(width):g}", float(width)))
        for name, config in (configs or {}).items():
            net.set_width(config)
            targets.setdefault(net.configuration_key(), (name, dict(config)))
    finally:
        net.set_width(previous)
    return targets


def _capture_buffers(net: SlimmableNet, targets: dict[str, tuple[str, Width]], layers: dict[str, SlimBatchNorm],
                     device: torch.device | str) -> dict[str, dict[str, WidthStatistics]]:
    """Per width and layer, running tensors that a train-mode forward with momentum 1 leaves
    holding that batch's mean and (unbiased) variance: batch norm computes them anyway."""
    captures = {}
    previous = net.width
    for key, (_, width) in targets.items():
        net.set_width(width)
        captures[key] = {}
        for name, layer in layers.items():
            n = len(layer.active_channels()["channel"])
            like = dict(device=device, dtype=layer.running_mean.dtype)
            captures[key][name] = WidthStatistics(torch.zeros(n, **like), torch.ones(n, **like), track=True,
                                                  momentum=1.0)
    net.set_width(previous)
    return captures


def _store(net: SlimmableNet, key: str, label: str, width: Width,
           statistics: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    net.set_width(width)
    layers = net.batch_norm_layers()
    if net.is_full_width():  # width 1.0: the layers' own buffers
        for name, (mean, var) in statistics.items():
            layer: SlimBatchNorm = layers[name]
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
    else:
        for name, (mean, var) in statistics.items():
            net.statistics.put(key, label, name, mean.to(layers[name].weight.dtype if layers[name].weight is not None
                                                          else mean.dtype), var)
