"""Which widths each training step trains (the sandwich rule and the paper's Table 2 ablations)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..net import Width


@dataclass
class WidthSampler:
    """Deterministic per step, so that every rank of a distributed run (and a resumed run)
    trains the same widths. The largest width, when sampled, comes first: it is the teacher."""

    min_width: float
    n: int = 4
    rule: str = "sandwich"
    nonuniform: bool = False
    seed: int = 0
    fixed: list[float] | None = None  # the same widths every step (baselines), largest first

    def sample(self, step: int, spaces: list[str] = ()) -> list[Width]:
        if self.fixed is not None:
            return sorted(self.fixed, reverse=True)
        rng = random.Random(self.seed * 1_000_003 + step)
        with_max = self.rule in ("sandwich", "max-random")
        with_min = self.rule in ("sandwich", "min-random")
        widths: list[Width] = [1.0] if with_max else []
        if with_min:
            widths.append(self.min_width)
        for _ in range(self.n - len(widths)):
            if self.nonuniform and spaces:
                widths.append({name: rng.uniform(self.min_width, 1.0) for name in spaces})
            else:
                widths.append(rng.uniform(self.min_width, 1.0))
        return widths
