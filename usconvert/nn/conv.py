"""Slimmable convolution and linear layers: any ``_ConvNd`` or ``nn.Linear`` subclass, with
grouped and depthwise convolutions shrinking by whole groups."""

from __future__ import annotations

from typing import Any

import torch

from .base import SlimLayer, overridden
from .layout import Layout, Selection, is_full, select_or_all, selection_size, take
from .parametrized import hook_sources


class _SlimWeighted(SlimLayer):
    """A layer whose weight is [out, in, ...]: output rows follow ``out_layout``, input columns
    follow ``in_layout`` (None: the input channels are fixed).

    ``output_averaging`` (the paper's Table 4, off by default): the output is scaled by the full
    count of input channels per group over the active count, so that each output averages over
    the channels it reads (identity at full width; a grouped or depthwise convolution keeps
    its group width, so it is never scaled, as the paper requires of depthwise ones). The
    network switches it on for convolutions only (``SlimmableNet.output_averaging`` says why)."""

    output_averaging = False
    slim_attributes = ("in_layout", "out_layout", "output_averaging")

    def output_scale(self, active_in: int) -> float:
        """The factor on the weight and bias when ``active_in`` input channels are active."""
        full_in = self.full_sizes[0]
        if not self.output_averaging or self.grouped or active_in == full_in:
            return 1.0
        return full_in / active_in

    def _averaged(self, weight: torch.Tensor, bias: torch.Tensor | None, active_in: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        scale = self.output_scale(active_in)
        if scale == 1.0:
            return weight, bias
        return weight * scale, bias * scale if bias is not None else None

    def slim_setup(self, *, in_layout: Layout | None, out_layout: Layout) -> None:
        self.in_layout = in_layout
        self.out_layout = out_layout

    @property
    def full_sizes(self) -> tuple[int, int]:
        raise NotImplementedError

    def selections(self, device: torch.device) -> dict[str, Selection]:
        return {"in": select_or_all(self.in_layout, self.full_sizes[0], device), "out": self.out_layout.select(device)}

    def narrowed(self, selections: dict[str, Selection]) -> tuple[dict[str, torch.Tensor | None], dict[str, Any]]:
        in_sel, out_sel = selections["in"], selections["out"]
        weight = take(self.weight, 0, out_sel)
        if not self.grouped:
            weight = take(weight, 1, in_sel)
        active_in = selection_size(in_sel)
        weight, bias = self._averaged(weight, take(self.bias, 0, out_sel), active_in)
        return {"weight": weight, "bias": bias, **self._per_output_tensors(out_sel)}, \
            self._sizes(active_in, weight.shape[0])

    @property
    def grouped(self) -> bool:
        return getattr(self, "groups", 1) != 1

    def _sizes(self, active_in: int, active_out: int) -> dict[str, int]:
        """The plain class's size attributes (subclasses read them: timm's StdConv2d reshapes
        its weight by out_channels)."""
        raise NotImplementedError

    def _per_output_tensors(self, out_sel: Selection) -> dict[str, torch.Tensor]:
        """Other parameters with a row per output channel (the gain of timm's ScaledStdConv2d)."""
        skip = {"weight", "bias"} | hook_sources(self)  # weight norm's sources: its computed weight is sliced
        return {name: take(p, 0, out_sel) for name, p in self._parameters.items()
                if name not in skip and p is not None and p.ndim and p.shape[0] == self.full_sizes[1]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        selections = self.selections(x.device)
        if is_full(selections["out"], self.full_sizes[1]) and is_full(selections["in"], self.full_sizes[0]):
            return super().forward(x)
        tensors, sizes = self.narrowed(selections)
        tensors["weight"] = self._for_input(tensors["weight"], x)
        with overridden(self, tensors, **sizes):
            return super().forward(x)

    def _for_input(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return weight

    def tensor_layouts(self, tensor: torch.Tensor) -> list[tuple[int, Layout]]:
        """Rows of the output size follow the outputs; columns of the input size the inputs,
        except in a grouped convolution (a weight's columns lie inside one group)."""
        size_in, size_out = self.full_sizes
        dims = [(0, self.out_layout)] if tensor.ndim >= 1 and tensor.shape[0] == size_out else []
        if self.in_layout is not None and not self.grouped and tensor.ndim >= 2 and tensor.shape[1] == size_in:
            dims.append((1, self.in_layout))
        return dims


class SlimConv(_SlimWeighted):
    @property
    def full_sizes(self) -> tuple[int, int]:
        return self.in_channels, self.out_channels

    def _sizes(self, active_in: int, active_out: int) -> dict[str, int]:
        # whole groups: each keeps its group width, their count follows the input
        groups = active_in // self.weight.shape[1] if self.grouped else 1
        return {"in_channels": active_in, "out_channels": active_out, "groups": groups}

    def _for_input(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # contiguous: a weight sliced along its inputs sends CPU convolutions down a slow path
        return weight if self.grouped else weight.contiguous(memory_format=_layout_of(x))


class SlimLinear(_SlimWeighted):
    @property
    def full_sizes(self) -> tuple[int, int]:
        return self.in_features, self.out_features

    def _sizes(self, active_in: int, active_out: int) -> dict[str, int]:
        return {"in_features": active_in, "out_features": active_out}


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory layout for a weight that meets ``x``: channels-last where ``x`` is (NHWC inputs
    and weights keep oneDNN on its fast path), else the standard one."""
    return torch.channels_last if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) else \
        torch.contiguous_format
