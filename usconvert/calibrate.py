"""BN post-statistics (paper Section 3.2): after training, batch-norm statistics are computed
for each width from a few training samples, without gradients, with the network in eval mode
and only its batch norms computing batch statistics (dropout and drop-path stay off, so the
statistics are those the layers will see at inference, and the same on every call).

``exact`` is the cumulative average of Eq. 8, each batch weighted by its size (so a short last
batch counts for what it holds); ``moving`` is the momentum recursion of Eq. 5. Each width runs
as an exported dense copy whose batch norms have momentum 1, so that after a forward their
running buffers hold that batch's statistics (computed by their own kernels, at no extra cost);
the network's own statistics are not touched while computing. Each batch is loaded (and
transformed) once and run through every width; a last batch of a single image is joined to the
one before it, since batch norm cannot compute statistics from one value per channel.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from .dense import dense_module
from .errors import UsconvertError
from .net import SlimmableNet, Width
from .nn import SlimBatchNorm, WidthStatistics
from .profile import active_parameters
from .width import width_grid

MODES = ("exact", "moving")
DENSE_COPY_BUDGET = 2 * 1024 ** 3  # bytes of exported copies calibration may hold at once


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

    def add(self, layer: str, mean: torch.Tensor, var: torch.Tensor, images: int) -> None:
        """One batch's statistics; ``exact`` weighs them by the batch's ``images``."""
        entry = self.sums.get(layer)
        if entry is None:
            if self.mode == "exact":
                self.sums[layer] = [mean * images, var * images, images]
            else:  # Eq. 5 from a fresh layer's statistics (mean 0, variance 1)
                self.sums[layer] = [self.momentum * mean, (1 - self.momentum) + self.momentum * var, 1]
        elif self.mode == "exact":
            entry[0].add_(mean, alpha=images)
            entry[1].add_(var, alpha=images)
            entry[2] += images
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
              on_batch: Callable[[int], None] | None = None, memory_budget: int = DENSE_COPY_BUDGET
              ) -> CalibrationReport:
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
    runners = _dense_runners(net, targets, layers, memory_budget) or _slicing_runners(net, targets, layers, device)
    previous, was_training = net.width, net.training
    start = time.perf_counter()
    try:
        net.eval()
        with net.batch_statistics_only(), _computing_batch_statistics(net.batch_norm_layers().values()), \
                torch.no_grad():
            for inputs in _batches_of_two_or_more(batches, samples):
                inputs = inputs.to(device)
                images = inputs.shape[0]
                for key, run in runners.items():
                    for name, (mean, var) in _run(run, inputs).items():
                        accumulators[key].add(name, mean, var, images)
                report.samples += images
                report.batches += 1
                if on_batch is not None:
                    on_batch(images)
    finally:
        net.set_width(previous)
        net.train(was_training)
    if report.samples == 0:
        raise UsconvertError("no samples to calibrate with: the data is empty")
    if report.samples < samples:
        report.message = (f"the data holds {report.samples} images, fewer than the {samples} asked: "
                          f"the statistics are computed from all of them")
    for key, (label, width) in targets.items():
        _store(net, key, label, width, accumulators[key].result(reduce))
        report.widths[key] = label
    net.set_width(previous)
    report.seconds = time.perf_counter() - start
    return report


def _batches_of_two_or_more(batches: Iterable, samples: int) -> Iterator[torch.Tensor]:
    """The inputs of ``batches``, cut to ``samples`` images in all; a batch of one image (the
    tail of a sample count, or of the data) is joined to the batch before it."""
    pending, taken = None, 0
    for batch in batches:
        inputs = (batch[0] if isinstance(batch, (list, tuple)) else batch)[: samples - taken]
        taken += inputs.shape[0]
        if pending is not None and inputs.shape[0] < 2:
            pending = torch.cat([pending, inputs.to(pending.device)])
        else:
            if pending is not None:
                yield pending
            pending = inputs
        if taken >= samples:
            break
    if pending is not None and pending.shape[0]:
        yield pending


def _run(run: "Runner", inputs: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    try:
        return run(inputs)
    except ValueError as exc:
        if "Expected more than 1 value per channel" not in str(exc):
            raise
        raise UsconvertError(f"cannot compute batch-norm statistics from a batch of {inputs.shape[0]} image: "
                             f"calibrate with more samples") from None


@contextmanager
def _computing_batch_statistics(norms: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, these batch norms (and nothing else: not dropout, not drop-path, not
    the activation or dropout that timm keeps inside a norm) normalise with batch statistics."""
    norms = list(norms)
    before = [norm.training for norm in norms]
    for norm in norms:
        norm.training = True
    try:
        yield
    finally:
        for norm, mode in zip(norms, before):
            norm.training = mode


def ensure_calibrated(net: SlimmableNet, width: Width, batches: Iterable, **options: Any) -> CalibrationReport | None:
    """Set ``width`` and, when it has no batch-norm statistics yet, calibrate it from
    ``batches`` (a width chosen at run time, calibrated on the spot). ``options`` are those of
    :func:`calibrate`. Returns the calibration's report, or None when none was needed."""
    net.set_width(width)
    if net.has_statistics():
        return None
    if isinstance(width, Mapping):
        report = calibrate(net, batches, [], configs={f"nonuniform {net.configuration_key()}": width}, **options)
    else:
        report = calibrate(net, batches, [width], **options)
    net.set_width(width)
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


Runner = Callable[[torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]


def _dense_runners(net: SlimmableNet, targets: dict[str, tuple[str, Width]], layers: dict[str, SlimBatchNorm],
                   budget: int) -> dict[str, Runner] | None:
    """Per width, an exported dense copy whose batch norms run with momentum 1, so that after a
    forward their running buffers hold that batch's mean and (unbiased) variance, computed by
    their own kernels. As fast as plain forward passes; None when the copies exceed ``budget``
    bytes (then the slicing path runs instead)."""
    element = next(net.parameters()).element_size()
    previous = net.width
    try:
        total = 0
        for _, width in targets.values():
            net.set_width(width)
            total += active_parameters(net) * element
        if total > budget:
            return None
        runners = {}
        # a skeleton: its statistics are overwritten by every batch; a switch's private batch-norm
        # weights (S-Net) stay, since the statistics are those of the layer as it normalises
        with net.sliced_statistics(private_affine=True):
            for key, (_, width) in targets.items():
                dense = dense_module(net, width)  # eval mode: only its batch norms compute statistics
                norms = {name: dense.get_submodule(name) for name in layers}
                for norm in norms.values():
                    norm.momentum = 1.0
                runners[key] = _dense_runner(dense, norms)
        return runners
    finally:
        net.set_width(previous)


def _dense_runner(dense: nn.Module, norms: dict[str, nn.Module]) -> Runner:
    def run(inputs: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        with _computing_batch_statistics(norms.values()):
            dense(inputs)
        return {name: (norm.running_mean, norm.running_var) for name, norm in norms.items()}
    return run


def _slicing_runners(net: SlimmableNet, targets: dict[str, tuple[str, Width]], layers: dict[str, SlimBatchNorm],
                     device: torch.device | str) -> dict[str, Runner]:
    """The same through the slimmable network itself: per width and layer, scratch running
    tensors that a forward with momentum 1 leaves holding the batch's statistics."""
    runners = {}
    previous = net.width
    for key, (_, width) in targets.items():
        net.set_width(width)
        captures = {}
        for name, layer in layers.items():
            n = len(layer.active_channels()["channel"])
            like = dict(device=device, dtype=layer.running_mean.dtype)
            captures[name] = WidthStatistics(torch.zeros(n, **like), torch.ones(n, **like), track=True, momentum=1.0)
        runners[key] = _slicing_runner(net, width, captures)
    net.set_width(previous)
    return runners


def _slicing_runner(net: SlimmableNet, width: Width, captures: dict[str, WidthStatistics]) -> Runner:
    def run(inputs: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        net.set_width(width)
        layers = net.batch_norm_layers()
        for name, capture in captures.items():
            layers[name].width_statistics = capture
        net.model(inputs)  # the slicing path itself, not the eval cache
        return {name: (c.running_mean, c.running_var) for name, c in captures.items()}
    return run


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
