"""Slimmable normalisation layers.

Batch norm keeps one set of affine parameters for all widths (the paper's default) and takes
its running statistics from the width's own entry: the module's buffers at full width, a
calibrated entry otherwise (set from outside by the network, never looked up globally). A
width may also bring private affine parameters (switchable batch norm, the S-Net baseline). Group
norm shrinks by whole groups; layer norm (and group norm with one group) normalises over the
active channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CalibrationRequiredError
from .base import SlimLayer, overridden
from .kinds import layer_norm_size
from .layout import Layout, indices_or_all, is_full, take


class OwnStatistics:
    """The module's own running statistics: those of the full width."""


OWN_STATISTICS = OwnStatistics()


@dataclass
class MissingStatistics:
    message: str


@dataclass
class WidthStatistics:
    running_mean: torch.Tensor
    running_var: torch.Tensor
    track: bool = False  # updated in place by train-mode forwards (the min width during training)
    momentum: float | None = None  # instead of the layer's own; 1.0 leaves the batch's statistics
    batches: torch.Tensor | None = None  # batches tracked: a layer with momentum=None averages over them


class _SlimNorm(SlimLayer):
    def slim_setup(self, *, channels: Layout | None, dim: int = 1) -> None:
        self.channel_layout = channels
        self.channel_layout_dim = dim

    @property
    def channel_count(self) -> int:
        raise NotImplementedError

    def active_channels(self) -> dict[str, list[int]]:
        return {"channel": indices_or_all(self.channel_layout, self.channel_count)}

    def tensor_layouts(self, tensor: torch.Tensor) -> list[tuple[int, Layout]]:
        """Per-channel vectors (affine weights, running statistics) follow the channels."""
        if self.channel_layout is None or tensor.ndim != 1 or tensor.shape[0] != self.channel_count:
            return []
        return [(0, self.channel_layout)]

    def _selection(self, x: torch.Tensor, size: int) -> int | torch.Tensor:
        return self.channel_layout.select(x.device) if self.channel_layout is not None else size


class SlimBatchNorm(_SlimNorm):
    def slim_setup(self, *, channels: Layout | None, dim: int = 1) -> None:
        super().slim_setup(channels=channels, dim=dim)
        self.width_statistics: OwnStatistics | MissingStatistics | WidthStatistics = OWN_STATISTICS
        self.width_affine: tuple[torch.Tensor, torch.Tensor] | None = None  # private weight and bias

    @property
    def channel_count(self) -> int:
        return self.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sel = self._selection(x, self.num_features)
        stats = self.width_statistics
        if stats is OWN_STATISTICS and self.width_affine is None and is_full(sel, self.num_features):
            return super().forward(x)
        if self.width_affine is not None:
            tensors = dict(zip(("weight", "bias"), self.width_affine))
        else:
            tensors = {"weight": take(self.weight, 0, sel), "bias": take(self.bias, 0, sel)}
        attributes = {}
        if self.training or not self.track_running_stats:
            # a scratch batch counter: some subclasses (SyncBatchNorm) insist on one while training
            tensors["num_batches_tracked"] = torch.zeros((), dtype=torch.long, device=x.device)
        if self.training and isinstance(stats, WidthStatistics) and stats.track:
            tensors.update(running_mean=stats.running_mean, running_var=stats.running_var)
            if stats.batches is not None:
                tensors["num_batches_tracked"] = stats.batches
            if stats.momentum is not None:
                attributes["momentum"] = stats.momentum
        elif self.training or not self.track_running_stats:
            tensors.update(running_mean=None, running_var=None)
        elif isinstance(stats, MissingStatistics):
            raise CalibrationRequiredError(stats.message)
        elif isinstance(stats, WidthStatistics):
            tensors.update(running_mean=stats.running_mean, running_var=stats.running_var)
        else:
            tensors.update(running_mean=take(self.running_mean, 0, sel), running_var=take(self.running_var, 0, sel))
        with overridden(self, tensors, **attributes):
            return super().forward(x)


class SlimGroupNorm(_SlimNorm):
    @property
    def channel_count(self) -> int:
        return self.num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sel = self._selection(x, self.num_channels)
        if is_full(sel, self.num_channels):
            return super().forward(x)
        active = x.shape[1]
        groups = active // (self.num_channels // self.num_groups) if self.num_groups > 1 else 1
        with overridden(self, {"weight": take(self.weight, 0, sel), "bias": take(self.bias, 0, sel)},
                        num_groups=groups, num_channels=active):
            return super().forward(x)


class SlimLayerNorm(_SlimNorm):
    """Layer norm, and timm's norms over the channels of each position (RMSNorm, SimpleNorm,
    Global Response Normalization): a width normalises over its active channels."""

    @property
    def channel_count(self) -> int:
        return layer_norm_size(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.channel_count
        sel = self._selection(x, size)
        if is_full(sel, size):
            return super().forward(x)
        tensors, attributes = narrowed_layer_norm(self, sel, x.shape[self.channel_layout_dim])
        with overridden(self, tensors, **attributes):
            return super().forward(x)


def narrowed_layer_norm(module: nn.Module, selection: int | torch.Tensor, active: int
                        ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int]]]:
    """The per-channel tensors (weight, bias: those it has) and the size attribute of a layer
    norm over ``active`` channels (``selection`` of its own)."""
    tensors = {name: take(module._parameters[name], 0, selection) for name in ("weight", "bias")
               if module._parameters.get(name) is not None}
    attributes = {"normalized_shape": (active,)} if "normalized_shape" in vars(module) else {}
    return tensors, attributes
