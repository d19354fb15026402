"""Channel spaces at analysis time.

A space is *atomic* or *defined* as a layout of other spaces: ``X := [(Y, f)]`` says that each
unit of Y spans f units of X (f = 1 ties two spaces of equal width; f > 1 ties a space to the
groups of a grouped convolution or to a depthwise channel multiplier), and
``X := [(X_lo, 1), (X_hi, 1)]`` refines X into two pieces that shrink independently (needed
when a tensor is split, or added to a concatenation, inside one space). Definitions only ever
point at atoms that exist before them, so expansion terminates; what remains atomic at the end
becomes a run-time :class:`usconvert.nn.layout.Space`.

A layout is a tuple of segments ``(space, inner)``: the dimension concatenates, for each
segment, ``space.size`` units of ``inner`` elements each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SpaceLayout = tuple[tuple["SpaceNode", int], ...]


@dataclass(eq=False)
class SpaceNode:
    index: int
    name: str
    size: int
    step: int = 1
    unit_channels: int = 1
    frozen_reasons: list[str] = field(default_factory=list)
    definition: SpaceLayout | None = None

    def __repr__(self) -> str:
        return f"SpaceNode({self.name!r}, {self.size})"


class SpaceGraph:
    def __init__(self) -> None:
        self.nodes: list[SpaceNode] = []

    def new(self, name: str, size: int, frozen_reason: str | None = None) -> SpaceNode:
        node = SpaceNode(len(self.nodes), name, size)
        if frozen_reason:
            node.frozen_reasons.append(frozen_reason)
        self.nodes.append(node)
        return node

    def layout(self, name: str, size: int, frozen_reason: str | None = None) -> SpaceLayout:
        return ((self.new(name, size, frozen_reason), 1),)

    # -- reading -----------------------------------------------------------------------------
    def expand(self, layout: SpaceLayout) -> SpaceLayout:
        """The layout in terms of atomic spaces only."""
        out: list[tuple[SpaceNode, int]] = []
        for node, inner in layout:
            if node.definition is None:
                out.append((node, inner))
            else:
                out.extend((atom, inner * sub) for atom, sub in self.expand(node.definition))
        return tuple(out)

    @staticmethod
    def size_of(layout: SpaceLayout) -> int:
        return sum(node.size * inner for node, inner in layout)

    def is_frozen(self, layout: SpaceLayout) -> bool:
        return all(atom.frozen_reasons or atom.size <= 1 for atom, _ in self.expand(layout))

    # -- constraints -------------------------------------------------------------------------
    def freeze(self, layout: SpaceLayout | None, reason: str) -> None:
        if layout is None:
            return
        for atom, _ in self.expand(layout):
            if reason not in atom.frozen_reasons:
                atom.frozen_reasons.append(reason)

    def merge(self, a: SpaceLayout, b: SpaceLayout, where: str) -> bool:
        """Make two layouts of one dimension shrink identically. Freezes both when impossible."""
        if self.size_of(a) != self.size_of(b):
            self._fail(a, b, f"{where}: channel counts differ")
            return False
        while True:
            ea, eb = self.expand(a), self.expand(b)
            cut = _first_misalignment(ea, eb)
            if cut is None:
                break
            node, inner, units_elements = cut
            if units_elements % inner:
                self._fail(a, b, f"{where}: boundaries fall inside one channel unit")
                return False
            self.refine(node, units_elements // inner, where)
        for (x, i), (y, j) in zip(self.expand(a), self.expand(b)):
            ex, ey = self.expand(((x, i),)), self.expand(((y, j),))
            if len(ex) > 1 or len(ey) > 1:
                self.merge(ex, ey, where)
            else:
                self._tie(ex[0], ey[0], where)
        return True

    def split(self, layout: SpaceLayout, sizes: list[int], where: str) -> list[SpaceLayout] | None:
        """Cut a layout into consecutive pieces of ``sizes`` elements, refining spaces as needed.
        None when a cut falls inside one unit of a segment."""
        boundaries = [sum(sizes[: k + 1]) for k in range(len(sizes) - 1)]
        for boundary in boundaries:
            offset = 0
            for node, inner in self.expand(layout):
                end = offset + node.size * inner
                if offset < boundary < end:
                    if (boundary - offset) % inner:
                        return None
                    self.refine(node, (boundary - offset) // inner, where)
                    break
                offset = end
        pieces: list[SpaceLayout] = []
        current: list[tuple[SpaceNode, int]] = []
        bounds = boundaries + [self.size_of(layout)]
        offset = k = 0
        for node, inner in self.expand(layout):
            while k < len(bounds) and bounds[k] == offset:
                pieces.append(tuple(current))
                current, k = [], k + 1
            current.append((node, inner))
            offset += node.size * inner
        while k < len(bounds) and bounds[k] == offset:
            pieces.append(tuple(current))
            current, k = [], k + 1
        return pieces

    def refine(self, node: SpaceNode, units: int, where: str) -> None:
        """Define atom ``node`` as two atoms: its first ``units`` units and the rest."""
        assert node.definition is None and 0 < units < node.size
        if units % node.step:
            self.freeze(((node, 1),), f"{where}: split inside a channel group")
        parts = []
        for start, stop in ((0, units), (units, node.size)):
            part = self.new(f"{node.name}[{start}:{stop}]", stop - start)
            part.step, part.unit_channels = node.step, node.unit_channels
            part.frozen_reasons = list(node.frozen_reasons)
            parts.append((part, 1))
        node.definition = tuple(parts)

    def require_step(self, layout: SpaceLayout, elements: int, where: str) -> None:
        """Every segment's active element count must be a multiple of ``elements``."""
        for atom, inner in self.expand(layout):
            units = elements // math.gcd(elements, inner)
            if atom.size % units:
                self.freeze(((atom, inner),), f"{where}: {atom.size} units are not whole groups of {units}")
            atom.step = math.lcm(atom.step, units)

    # -- internals ---------------------------------------------------------------------------
    def _tie(self, x: tuple[SpaceNode, int], y: tuple[SpaceNode, int], where: str) -> None:
        (a, i), (b, j) = x, y
        if a is b:
            return
        if i == j:
            finer, coarser, factor = (b, a, 1) if a.index < b.index else (a, b, 1)
        elif j % i == 0:
            finer, coarser, factor = a, b, j // i
        elif i % j == 0:
            finer, coarser, factor = b, a, i // j
        else:
            self._fail(((a, i),), ((b, j),), f"{where}: incompatible channel grouping")
            return
        for reason in finer.frozen_reasons:
            if reason not in coarser.frozen_reasons:
                coarser.frozen_reasons.append(reason)
        coarser.step = math.lcm(coarser.step, finer.step // math.gcd(finer.step, factor))
        coarser.unit_channels = max(coarser.unit_channels, finer.unit_channels * factor)
        finer.definition = ((coarser, factor),)

    def _fail(self, a: SpaceLayout, b: SpaceLayout, reason: str) -> None:
        self.freeze(a, reason)
        self.freeze(b, reason)


def _first_misalignment(a: SpaceLayout, b: SpaceLayout) -> tuple[SpaceNode, int, int] | None:
    """Where two expanded layouts of equal size first disagree on a segment boundary: the longer
    segment there, its inner size, and the element count at which it must be cut."""
    ia = ib = 0
    while ia < len(a) and ib < len(b):
        (x, i), (y, j) = a[ia], b[ib]
        la, lb = x.size * i, y.size * j
        if la == lb:
            ia, ib = ia + 1, ib + 1
        elif la > lb:
            return x, i, lb
        else:
            return y, j, la
    return None
