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
from .layout import Layout, Selection, is_full, select_or_all, selection_size, take


class SlimRecurrent(SlimLayer):
    slim_attributes = ("in_layout",)

    def slim_setup(self, *, in_layout: Layout | None) -> None:
        self.in_layout = in_layout

    @property
    def input_weight_names(self) -> tuple[str, ...]:
        """The first layer's input weights, [gates x hidden, input_size], one per direction."""
        return ("weight_ih_l0", "weight_ih_l0_reverse") if self.bidirectional else ("weight_ih_l0",)

    def selections(self, device: torch.device) -> dict[str, Selection]:
        return {"in": select_or_all(self.in_layout, self.input_size, device)}

    def narrowed(self, selections: dict[str, Selection]) -> tuple[dict[str, torch.Tensor | None], dict[str, Any]]:
        sel = selections["in"]
        return {name: take(getattr(self, name), 1, sel) for name in self.input_weight_names}, \
            {"input_size": selection_size(sel)}

    def tensor_layouts(self, tensor: torch.Tensor) -> list[tuple[int, Layout]]:
        """Only the columns of the first layer's input weights follow the input."""
        if self.in_layout is None or not any(tensor is getattr(self, n) for n in self.input_weight_names):
            return []
        return [(1, self.in_layout)]

    def forward(self, input: torch.Tensor, hx: Any = None) -> Any:
        selections = self.selections(input.device)
        if is_full(selections["in"], self.input_size):
            return super().forward(input, hx)
        tensors, sizes = self.narrowed(selections)
        # torch's RNNs run on ``_flat_weights``, rebuilt (and on CUDA flattened into one buffer,
        # which would rebind the sliced views) when the weights change: hand them the sliced list
        # with matching references, so neither happens and the module's own list is untouched
        flat = [tensors.get(name, w) for name, w in zip(self._flat_weights_names, self._flat_weights)]
        refs = [weakref.ref(w) if w is not None else None for w in flat]
        with overridden(self, tensors, **sizes, _flat_weights=flat, _flat_weight_refs=refs):
            return super().forward(input, hx)
