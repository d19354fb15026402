"""Run-time channel spaces and layouts.

A :class:`Space` is a set of channels that must shrink together; its ``active`` count is the
only mutable state, written by :meth:`usconvert.SlimmableNet.set_width`. A :class:`Layout`
describes one tensor dimension as a concatenation of segments ``(space, inner)``: each unit of
the space spans ``inner`` consecutive elements (``inner`` > 1 after a flatten or a depthwise
channel multiplier). The active elements of a segment are always its leading ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# the active elements of one dimension: a count of leading elements, or a LongTensor of indices
Selection = int | torch.Tensor

# why the spaces of a model's output are frozen: the caller reads them whole (not a limit of the rules)
MODEL_OUTPUT = "model output"


@dataclass(eq=False)
class Space:
    name: str
    size: int
    step: int = 1
    unit_channels: int = 1
    frozen_reasons: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    active: int = -1

    def __post_init__(self) -> None:
        if self.active < 0:
            self.active = self.size

    @property
    def frozen(self) -> bool:
        return bool(self.frozen_reasons) or self.size <= 1

    @property
    def frozen_by_rule(self) -> bool:
        """Frozen for a reason other than being the model's output: what a census counts against the rules."""
        return self.frozen and self.frozen_reasons != [MODEL_OUTPUT]

    def __repr__(self) -> str:
        state = "frozen" if self.frozen else f"{self.active}/{self.size}"
        return f"Space({self.name!r}, {state})"


class Layout:
    """The channel structure of one tensor dimension; selects its active elements."""

    __slots__ = ("segments", "size", "_cache_key", "_cache")

    def __init__(self, segments: tuple[tuple[Space, int], ...]):
        self.segments = segments
        self.size = sum(space.size * inner for space, inner in segments)
        self._cache_key: tuple[int, ...] | None = None
        self._cache: dict[torch.device, int | torch.Tensor] = {}

    def active_size(self) -> int:
        return sum(space.active * inner for space, inner in self.segments)

    def is_prefix(self) -> bool:
        """True when the active elements are the leading ``active_size()`` elements."""
        seen_partial = False
        for space, inner in self.segments:
            if seen_partial and space.active > 0:
                return False
            if space.active < space.size:
                seen_partial = True
        return True

    def indices(self) -> list[int]:
        out: list[int] = []
        offset = 0
        for space, inner in self.segments:
            out.extend(range(offset, offset + space.active * inner))
            offset += space.size * inner
        return out

    def select(self, device: torch.device) -> int | torch.Tensor:
        """The active elements: an int ``n`` for the prefix ``[:n]``, else a LongTensor of indices."""
        key = tuple(space.active for space, _ in self.segments)
        if key != self._cache_key:
            self._cache_key = key
            self._cache = {}
        selection = self._cache.get(device)
        if selection is None:
            if self.is_prefix():
                selection = self.active_size()
            else:
                selection = torch.tensor(self.indices(), dtype=torch.long, device=device)
            self._cache[device] = selection
        return selection

    def __repr__(self) -> str:
        parts = [space.name + (f"x{inner}" if inner > 1 else "") for space, inner in self.segments]
        return "Layout(" + " + ".join(parts) + ")"


def select_or_all(layout: "Layout | None", size: int, device: torch.device) -> Selection:
    """The layout's active elements; all ``size`` where the dimension has no layout (fixed)."""
    return layout.select(device) if layout is not None else size


def selection_size(selection: Selection) -> int:
    return selection if isinstance(selection, int) else len(selection)


def take(tensor: torch.Tensor | None, dim: int, selection: Selection) -> torch.Tensor | None:
    """Slice (a view, so gradients reach the shared tensor) or gather ``tensor`` along ``dim``."""
    if tensor is None:
        return None
    if isinstance(selection, int):
        return tensor if selection == tensor.shape[dim] else tensor.narrow(dim, 0, selection)
    return tensor.index_select(dim, selection)


def is_full(selection: Selection, size: int) -> bool:
    return isinstance(selection, int) and selection == size
