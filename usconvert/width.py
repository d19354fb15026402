"""The width rule: how many channels of a space are active at a width ratio."""

from __future__ import annotations

import math


def make_divisible(value: float, divisor: int) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``), adding one
    more ``divisor`` when rounding down lost more than 10% (the MobileNet rule the paper uses)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def parse_widths(text: str) -> list[float]:
    """``0.25,0.5,1.0`` (a list) or ``0.25:1.0:0.025`` (start:stop:step, both ends included)."""
    from .errors import WidthError

    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            return width_grid(start, stop, step)
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise WidthError(f"widths must be a list (0.25,0.5,1.0) or a range start:stop:step "
                         f"(0.25:1.0:0.025), got {text!r}") from None


def width_grid(start: float, stop: float, step: float) -> list[float]:
    """``start, start+step, ..., stop`` without floating-point drift."""
    count = int((stop - start) / step + 1e-9)
    grid = [round(start + i * step, 10) for i in range(count + 1)]
    return grid if grid[-1] >= stop - 1e-9 else grid + [stop]


def active_units(size: int, ratio: float, divisor: int, step: int = 1, unit_channels: int = 1) -> int:
    """Active units of a space of ``size`` units at ``ratio``.

    A unit is ``unit_channels`` channels (1 for ordinary spaces, the group width for the group
    count of a grouped convolution); the count of active channels is a multiple of the divisor
    and of ``step`` units, never more than the space holds, and the whole space at ratio 1.
    """
    if ratio >= 1.0:
        return size
    channel_divisor = math.lcm(divisor, step * unit_channels)
    channels = make_divisible(size * unit_channels * ratio, channel_divisor)
    return min(size, channels // unit_channels)
