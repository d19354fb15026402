"""The FLOPs-accuracy spectrum (paper Figures 1 and 3): one network evaluated at many widths.

Each validation batch is loaded once and run through every width, so each width is evaluated
exactly once (the paper's own code evaluated every width on every batch for every width).
Classification reports top-1/top-5; regression (outputs shaped like the targets) reports L1
loss and PSNR.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from .clips import forward_videos
from .net import SlimmableNet, Width
from .profile import active_parameters, count_macs, measure_latency
from .files import atomic_path, write_csv_file, write_json_file


@dataclass
class SpectrumRow:
    """One width's results; the field names are those of ``profile``'s rows."""

    width: float | None  # null for a nonuniform width, named in ``configuration``
    configuration: str | None
    multiply_adds: int
    parameters: int
    top1: float | None = None
    top5: float | None = None
    loss: float | None = None
    psnr: float | None = None
    latency_ms_batch_1: float | None = None
    latency_iqr_ms_batch_1: float | None = None

    @property
    def label(self) -> str:
        return f"{self.width:g}" if self.width is not None else str(self.configuration)


class _Metrics:
    def __init__(self) -> None:
        self.top1 = self.top5 = self.loss = self.squared = 0.0
        self.count = 0
        self.classes = 0
        self.regression = False

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        output = output.float()
        if target.dtype.is_floating_point and target.shape == output.shape:
            self.regression = True
            self.loss += F.l1_loss(output, target, reduction="sum").item() / output[0].numel()
            mse = ((output.clamp(0, 1) - target) ** 2).flatten(1).mean(1)
            self.squared += mse.clamp_min(1e-12).log10().sum().item()
        else:
            self.classes = output.shape[-1]
            top = output.topk(min(5, output.shape[-1]), dim=-1).indices
            hits = top == target[:, None]
            self.top1 += hits[:, 0].sum().item()
            self.top5 += hits.any(-1).sum().item()
            self.loss += F.cross_entropy(output, target, reduction="sum").item()
        self.count += output.shape[0]

    def finish(self, row: SpectrumRow, reduce: Callable[[list[float]], list[float]] | None) -> None:
        top1, top5, loss, squared, count = (reduce or (lambda v: v))(
            [self.top1, self.top5, self.loss, self.squared, float(self.count)])
        row.loss = loss / count
        if self.regression:
            row.psnr = -10 * squared / count  # mean per-image PSNR for images in [0, 1]
        else:
            row.top1 = 100 * top1 / count
            row.top5 = 100 * top5 / count if self.classes > 5 else None  # with 5 classes or fewer it says nothing


def spectrum(net: SlimmableNet, batches: Iterable, widths: list[Width], *, latency: bool = False,
             device: torch.device | str | None = None, reduce: Callable[[list[float]], list[float]] | None = None,
             on_batch: Callable[[int], None] | None = None) -> list[SpectrumRow]:
    """Evaluate ``net`` at every width (eval mode, with each width's calibrated statistics)."""
    device = device or next(net.parameters()).device
    metrics = {i: _Metrics() for i in range(len(widths))}
    previous, was_training = net.width, net.training
    net.eval()
    try:
        with torch.no_grad():
            for inputs, targets in batches:
                inputs, targets = inputs.to(device), targets.to(device)
                for i, width in enumerate(widths):
                    net.set_width(width)
                    metrics[i].add(forward_videos(net, inputs, len(net.input_size)), targets)
                if on_batch is not None:
                    on_batch(inputs.shape[0])
        rows = []
        for i, width in enumerate(widths):
            net.set_width(width)
            fields = net.width_fields()
            row = SpectrumRow(fields["width"], fields["configuration"], count_macs(net).macs, active_parameters(net))
            metrics[i].finish(row, reduce)
            if latency:
                measured = measure_latency(net)
                row.latency_ms_batch_1, row.latency_iqr_ms_batch_1 = measured.median_ms, measured.iqr_ms
            rows.append(row)
        return rows
    finally:
        net.set_width(previous)
        net.train(was_training)


def write_json(rows: list[SpectrumRow], path: Path, meta: dict[str, Any]) -> None:
    write_json_file(path, {**meta, "rows": [asdict(r) for r in rows]})


def write_csv(rows: list[SpectrumRow], path: Path) -> None:
    write_csv_file(path, [asdict(r) for r in rows])


def plot(series: list[dict[str, Any]], path: Path, title: str = "FLOPs-accuracy spectrum") -> None:
    """The paper's Figure 3: multiply-adds on x, accuracy (or PSNR) on y, a line per network;
    a series of a single width (an individually trained model) is drawn as a point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    draw(series, axes, title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def draw(series: list[dict[str, Any]], axes: Any, title: str) -> None:
    """``plot``'s drawing on matplotlib ``axes``. A series whose rows carry ``top1_std`` (or
    ``psnr_std``), a mean over trainings, gets a band of one std either side of its line."""
    metric = "psnr" if all(r.get("top1") is None for s in series for r in s["rows"]) else "top1"
    for s in series:
        xs = [r["multiply_adds"] / 1e6 for r in s["rows"]]
        ys = [r[metric] for r in s["rows"]]
        style = "-o" if len(xs) > 1 else "s"
        (line,) = axes.plot(xs, ys, style, markersize=3 if len(xs) > 1 else 7, label=s["name"])
        stds = [r.get(f"{metric}_std") for r in s["rows"]]
        if len(xs) > 1 and all(std is not None for std in stds) and any(stds):
            axes.fill_between(xs, [y - d for y, d in zip(ys, stds)], [y + d for y, d in zip(ys, stds)],
                              color=line.get_color(), alpha=0.15, linewidth=0)
    axes.set_xlabel("multiply-adds (millions)")
    axes.set_ylabel("top-1 accuracy (%)" if metric == "top1" else "PSNR (dB)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")


def load_series(path: Path) -> dict[str, Any]:
    """A spectrum JSON written by this module, or any JSON with ``rows`` of ``multiply_adds``
    and ``top1`` (or ``psnr``) and an optional ``name``."""
    data = json.loads(Path(path).read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    name = data.get("name", Path(path).stem) if isinstance(data, dict) else Path(path).stem
    return {"name": name, "rows": rows}

