"""Slimmable convolution: any ``_ConvNd`` subclass, with grouped and depthwise convolutions
shrinking by whole groups."""

from __future__ import annotations

import torch

from .base import SlimLayer, overridden
from .layout import Layout, indices_or_all, is_full, take


class SlimConv(SlimLayer):
    def slim_setup(self, *, in_layout: Layout | None, out_layout: Layout) -> None:
        self.in_layout = in_layout
        self.out_layout = out_layout

    def active_selections(self, device: torch.device) -> tuple[int | torch.Tensor, int | torch.Tensor]:
        in_sel = self.in_layout.select(device) if self.in_layout is not None else self.in_channels
        return in_sel, self.out_layout.select(device)

    def active_channels(self) -> dict[str, list[int]]:
        return {"in": indices_or_all(self.in_layout, self.in_channels), "out": self.out_layout.indices()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_sel, out_sel = self.active_selections(x.device)
        if is_full(out_sel, self.out_channels) and is_full(in_sel, self.in_channels):
            return super().forward(x)
        weight = take(self.weight, 0, out_sel)
        if self.groups == 1:
            weight = take(weight, 1, in_sel)
            groups = 1
        else:  # whole groups: each keeps its group width, their count follows the input
            groups = x.shape[-len(self.kernel_size) - 1] // self.weight.shape[1]
        with overridden(self, {"weight": weight, "bias": take(self.bias, 0, out_sel)}, groups=groups):
            return super().forward(x)
