"""Slimmable linear layer (any ``nn.Linear`` subclass)."""

from __future__ import annotations

import torch

from .base import SlimLayer, overridden
from .layout import Layout, indices_or_all, is_full, take


class SlimLinear(SlimLayer):
    def slim_setup(self, *, in_layout: Layout | None, out_layout: Layout) -> None:
        self.in_layout = in_layout
        self.out_layout = out_layout

    def active_selections(self, device: torch.device) -> tuple[int | torch.Tensor, int | torch.Tensor]:
        in_sel = self.in_layout.select(device) if self.in_layout is not None else self.in_features
        return in_sel, self.out_layout.select(device)

    def active_channels(self) -> dict[str, list[int]]:
        return {"in": indices_or_all(self.in_layout, self.in_features), "out": self.out_layout.indices()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_sel, out_sel = self.active_selections(x.device)
        if is_full(out_sel, self.out_features) and is_full(in_sel, self.in_features):
            return super().forward(x)
        weight = take(take(self.weight, 0, out_sel), 1, in_sel)
        with overridden(self, {"weight": weight, "bias": take(self.bias, 0, out_sel)}):
            return super().forward(x)
