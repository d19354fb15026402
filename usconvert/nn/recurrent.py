"""Slimmable recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``): the input features slim,
the hidden units stay whole.

A hidden unit reads every other one through the recurrence, so the model with some hidden units
switched off is not a narrower recurrent layer: only the input columns of the first layer's
weights (both directions) follow the input's channels."""

from __future__ import annotations

import weakref
from typing import Any

import torch

from .base import SlimLayer, overridden
from .layout import Layout, indices_or_all, is_full, take


class SlimRecurrent(SlimLayer):
    def slim_setup(self, *, in_layout: Layout | None) -> None:
        self.in_layout = in_layout

    @property
    def input_weight_names(self) -> tuple[str, ...]:
        """The first layer's input weights, [gates x hidden, input_size], one per direction."""
        return ("weight_ih_l0", "weight_ih_l0_reverse") if self.bidirectional else ("weight_ih_l0",)

    def active_channels(self) -> dict[str, list[int]]:
        return {"in": indices_or_all(self.in_layout, self.input_size)}

    def tensor_layouts(self, tensor: torch.Tensor) -> list[tuple[int, Layout]]:
        """Only the columns of the first layer's input weights follow the input."""
        if self.in_layout is None or not any(tensor is getattr(self, n) for n in self.input_weight_names):
            return []
        return [(1, self.in_layout)]

    def forward(self, input: torch.Tensor, hx: Any = None) -> Any:
        selection = self.in_layout.select(input.device) if self.in_layout is not None else self.input_size
        if is_full(selection, self.input_size):
            return super().forward(input, hx)
        tensors = {name: take(getattr(self, name), 1, selection) for name in self.input_weight_names}
        # torch's RNNs run on ``_flat_weights``, rebuilt (and on CUDA flattened into one buffer,
        # which would rebind the sliced views) when the weights change: hand them the sliced list
        # with matching references, so neither happens and the module's own list is untouched
        flat = [tensors.get(name, w) for name, w in zip(self._flat_weights_names, self._flat_weights)]
        refs = [weakref.ref(w) if w is not None else None for w in flat]
        with overridden(self, tensors, input_size=input.shape[-1], _flat_weights=flat, _flat_weight_refs=refs):
            return super().forward(input, hx)
