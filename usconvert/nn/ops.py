"""Run-time channel ops that replace graph nodes whose sizes were constants at trace time."""

from __future__ import annotations

import torch
from torch import nn

from .layout import Layout, take


class ChannelSplit(nn.Module):
    """``split``/``chunk`` along a channel dim, cutting at the pieces' active sizes."""

    def __init__(self, dim: int, pieces: list[Layout]):
        super().__init__()
        self.dim = dim
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, [p.active_size() for p in self.pieces], dim=self.dim)


class ChannelSlice(nn.Module):
    """``x[..., a:b, ...]`` where ``a:b`` is a whole piece of a channel layout."""

    def __init__(self, items: tuple, position: int, before: Layout | None, piece: Layout):
        super().__init__()
        self.items = items
        self.position = position
        self.before = before
        self.piece = piece

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = self.before.active_size() if self.before is not None else 0
        items = list(self.items)
        items[self.position] = slice(start, start + self.piece.active_size())
        return x[tuple(items)]


class ActiveSize(nn.Module):
    """A size the code wrote as a literal (a head count, ``self.dim``) that follows the width.
    ``scaled``: a size computed at run time from dims the width does not touch times channels
    (``B * num_heads``, the batch folded into the heads), which the width scales instead of
    replacing, so that it holds at every batch size."""

    def __init__(self, layout: Layout, scaled: bool = False):
        super().__init__()
        self.layout = layout
        self.scaled = scaled

    def forward(self, value: int | None = None) -> int:
        if self.scaled:
            return value * self.layout.active_size() // self.layout.size
        return self.layout.active_size()


class ParameterSlice(nn.Module):
    """A parameter used outside a layer (a layer-scale vector, say), sliced to the active channels."""

    def __init__(self, layouts: tuple[Layout | None, ...]):
        super().__init__()
        self.layouts = layouts

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            # a view of a parameter taken without autograd would still claim to require grad,
            # with no gradient function (torch's FlopCounterMode and module hooks trip on it)
            tensor = tensor.detach()
        for dim, layout in enumerate(self.layouts):
            if layout is not None:
                tensor = take(tensor, dim, layout.select(tensor.device))
        return tensor
