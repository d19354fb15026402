"""Slimmable convolution and linear layers: any ``_ConvNd`` or ``nn.Linear`` subclass, with
grouped and depthwise convolutions shrinking by whole groups."""

from __future__ import annotations

import torch

from .base import SlimLayer, overridden
from .layout import Layout, indices_or_all, is_full, take
from .parametrized import hook_sources


class _SlimWeighted(SlimLayer):
    """A layer whose weight is [out, in, ...]: output rows follow ``out_layout``, input columns
    follow ``in_layout`` (None: the input channels are fixed).

    ``output_averaging`` (the paper's Table 4, off by default): the output is scaled by the full
    count of input channels per group over the active count, so that each output averages over
    the channels it reads (identity at full width; a grouped or depthwise convolution keeps
    its group width, so it is never scaled, as the paper requires of depthwise ones)."""

    output_averaging = False

    def output_scale(self, active_in: int) -> float:
        """The factor on the weight and bias when ``active_in`` input channels are active."""
        full_in = self.full_sizes[0]
        if not self.output_averaging or getattr(self, "groups", 1) != 1 or active_in == full_in:
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

    def selections(self, device: torch.device) -> tuple[int | torch.Tensor, int | torch.Tensor]:
        size_in, _ = self.full_sizes
        in_sel = self.in_layout.select(device) if self.in_layout is not None else size_in
        return in_sel, self.out_layout.select(device)

    def active_channels(self) -> dict[str, list[int]]:
        return {"in": indices_or_all(self.in_layout, self.full_sizes[0]), "out": self.out_layout.indices()}

    def tensor_layouts(self, tensor: torch.Tensor) -> list[tuple[int, Layout]]:
        """Rows of the output size follow the outputs; columns of the input size the inputs,
        except in a grouped convolution (a weight's columns lie inside one group)."""
        size_in, size_out = self.full_sizes
        dims = [(0, self.out_layout)] if tensor.ndim >= 1 and tensor.shape[0] == size_out else []
        if (self.in_layout is not None and getattr(self, "groups", 1) == 1 and tensor.ndim >= 2
                and tensor.shape[1] == size_in):
            dims.append((1, self.in_layout))
        return dims


class SlimConv(_SlimWeighted):
    @property
    def full_sizes(self) -> tuple[int, int]:
        return self.in_channels, self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_sel, out_sel = self.selections(x.device)
        if is_full(out_sel, self.out_channels) and is_full(in_sel, self.in_channels):
            return super().forward(x)
        weight = take(self.weight, 0, out_sel)
        if self.groups == 1:
            # contiguous: a weight sliced along its inputs sends CPU convolutions down a slow path
            weight = take(weight, 1, in_sel).contiguous(memory_format=_layout_of(x))
            groups = 1
        else:  # whole groups: each keeps its group width, their count follows the input
            groups = x.shape[-len(self.kernel_size) - 1] // self.weight.shape[1]
        weight, bias = self._averaged(weight, take(self.bias, 0, out_sel), x.shape[-len(self.kernel_size) - 1])
        tensors = {"weight": weight, "bias": bias, **self._per_output_tensors(out_sel)}
        # subclasses read the counts (timm's StdConv2d reshapes its weight by out_channels)
        with overridden(self, tensors, groups=groups, in_channels=x.shape[-len(self.kernel_size) - 1],
                        out_channels=weight.shape[0]):
            return super().forward(x)

    def _per_output_tensors(self, out_sel: int | torch.Tensor) -> dict[str, torch.Tensor]:
        """Other parameters with a row per output channel (the gain of timm's ScaledStdConv2d)."""
        skip = {"weight", "bias"} | hook_sources(self)  # weight norm's sources: its computed weight is sliced
        return {name: take(p, 0, out_sel) for name, p in self._parameters.items()
                if name not in skip and p is not None and p.ndim and p.shape[0] == self.out_channels}


class SlimLinear(_SlimWeighted):
    @property
    def full_sizes(self) -> tuple[int, int]:
        return self.in_features, self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_sel, out_sel = self.selections(x.device)
        if is_full(out_sel, self.out_features) and is_full(in_sel, self.in_features):
            return super().forward(x)
        weight = take(take(self.weight, 0, out_sel), 1, in_sel)
        weight, bias = self._averaged(weight, take(self.bias, 0, out_sel), weight.shape[1])
        with overridden(self, {"weight": weight, "bias": bias},
                        in_features=weight.shape[1], out_features=weight.shape[0]):
            return super().forward(x)


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory layout for a weight that meets ``x``: channels-last where ``x`` is (NHWC inputs
    and weights keep oneDNN on its fast path), else the standard one."""
    return torch.channels_last if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) else \
        torch.contiguous_format
