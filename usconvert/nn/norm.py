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
from typing import Any

import torch

from ..errors import CalibrationRequiredError
from .base import SlimLayer, overridden
from .kinds import layer_norm_size
from .layout import Layout, Selection, is_full, select_or_all, selection_size, take


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
    slim_attributes = ("channel_layout", "channel_layout_dim")

    def slim_setup(self, *, channels: Layout | None, dim: int = 1) -> None:
        self.channel_layout = channels
        self.channel_layout_dim = dim

    @property
    def channel_count(self) -> int:
        raise NotImplementedError

    def selections(self, device: torch.device) -> dict[str, Selection]:
        return {"channel": select_or_all(self.channel_layout, self.channel_count, device)}

    def tensor_layouts(self, tensor: torch.Tensor) -> list[tuple[int, Layout]]:
        """Per-channel vectors (affine weights, running statistics) follow the channels."""
        if self.channel_layout is None or tensor.ndim != 1 or tensor.shape[0] != self.channel_count:
            return []
        return [(0, self.channel_layout)]

    def _affine(self, selection: Selection) -> dict[str, torch.Tensor | None]:
        """The per-channel weight and bias (those the module has) at ``selection``."""
        return {name: take(self._parameters[name], 0, selection) for name in ("weight", "bias")
                if self._parameters.get(name) is not None}


class _StatelessNorm(_SlimNorm):
    """A norm without running statistics: a width runs the module's own forward narrowed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        selections = self.selections(x.device)
        if is_full(selections["channel"], self.channel_count):
            return super().forward(x)
        tensors, sizes = self.narrowed(selections)
        with overridden(self, tensors, **sizes):
            return super().forward(x)


class SlimBatchNorm(_SlimNorm):
    slim_attributes = (*_SlimNorm.slim_attributes, "width_statistics", "width_affine")

    def slim_setup(self, *, channels: Layout | None, dim: int = 1) -> None:
        super().slim_setup(channels=channels, dim=dim)
        self.width_statistics: OwnStatistics | MissingStatistics | WidthStatistics = OWN_STATISTICS
        self.width_affine: tuple[torch.Tensor, torch.Tensor] | None = None  # private weight and bias

    @property
    def channel_count(self) -> int:
        return self.num_features

    def _affine(self, selection: Selection) -> dict[str, torch.Tensor | None]:
        if self.width_affine is not None:
            return dict(zip(("weight", "bias"), self.width_affine))
        return super()._affine(selection)

    def narrowed(self, selections: dict[str, Selection]) -> tuple[dict[str, torch.Tensor | None], dict[str, Any]]:
        """In eval mode: the width's affine weights and running statistics."""
        sel = selections["channel"]
        tensors = self._affine(sel)
        stats = self.width_statistics
        if isinstance(stats, MissingStatistics) and self.track_running_stats:
            raise CalibrationRequiredError(stats.message)
        if isinstance(stats, WidthStatistics):
            tensors.update(running_mean=stats.running_mean, running_var=stats.running_var)
        else:
            tensors.update(running_mean=take(self.running_mean, 0, sel), running_var=take(self.running_var, 0, sel))
        return tensors, {"num_features": selection_size(sel)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sel = self.selections(x.device)["channel"]
        stats = self.width_statistics
        if stats is OWN_STATISTICS and self.width_affine is None and is_full(sel, self.num_features):
            return super().forward(x)
        if not self.training and self.track_running_stats:
            tensors, attributes = self.narrowed({"channel": sel})
            with overridden(self, tensors, **attributes):
                return super().forward(x)
        tensors = self._affine(sel)
        # a scratch batch counter: some subclasses (SyncBatchNorm) insist on one while training
        tensors["num_batches_tracked"] = torch.zeros((), dtype=torch.long, device=x.device)
        attributes = {}
        if self.training and isinstance(stats, WidthStatistics) and stats.track:
            tensors.update(running_mean=stats.running_mean, running_var=stats.running_var)
            if stats.batches is not None:
                tensors["num_batches_tracked"] = stats.batches
            if stats.momentum is not None:
                attributes["momentum"] = stats.momentum
        else:
            tensors.update(running_mean=None, running_var=None)
        with overridden(self, tensors, **attributes):
            return super().forward(x)


class SlimGroupNorm(_StatelessNorm):
    @property
    def channel_count(self) -> int:
        return self.num_channels

    def narrowed(self, selections: dict[str, Selection]) -> tuple[dict[str, torch.Tensor | None], dict[str, Any]]:
        sel = selections["channel"]
        active = selection_size(sel)
        # whole groups keep their size; one group normalises over the active channels
        groups = active // (self.num_channels // self.num_groups) if self.num_groups > 1 else 1
        return self._affine(sel), {"num_groups": groups, "num_channels": active}


class SlimLayerNorm(_StatelessNorm):
    """Layer norm, and timm's norms over the channels of each position (RMSNorm, SimpleNorm,
    Global Response Normalization): a width normalises over its active channels."""

    @property
    def channel_count(self) -> int:
        return layer_norm_size(self)

    def narrowed(self, selections: dict[str, Selection]) -> tuple[dict[str, torch.Tensor | None], dict[str, Any]]:
        sel = selections["channel"]
        sizes = {"normalized_shape": (selection_size(sel),)} if "normalized_shape" in vars(self) else {}
        return self._affine(sel), sizes
