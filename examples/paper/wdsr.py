"""A WDSR-A network (Yu et al., "Wide Activation for Efficient and Accurate Image
Super-Resolution"): weight-normalised convolutions, no batch norm, wide residual blocks, a
pixel-shuffle tail and a global skip branch. Plain PyTorch: usconvert converts it like any model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K's, as WDSR uses


def _conv(cin: int, cout: int, kernel: int) -> nn.Module:
    return weight_norm(nn.Conv2d(cin, cout, kernel, padding=kernel // 2))


class WideBlock(nn.Module):
    def __init__(self, channels: int, expansion: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels * expansion, 3), nn.ReLU(inplace=True),
                                  _conv(channels * expansion, channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class WDSR(nn.Module):
    def __init__(self, channels: int = 32, blocks: int = 4, expansion: int = 4, scale: int = 2):
        super().__init__()
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1))
        self.head = _conv(3, channels, 3)
        self.body = nn.Sequential(*(WideBlock(channels, expansion) for _ in range(blocks)))
        self.tail = nn.Sequential(_conv(channels, 3 * scale * scale, 3), nn.PixelShuffle(scale))
        self.skip = nn.Sequential(_conv(3, 3 * scale * scale, 5), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.mean
        return self.tail(self.body(self.head(x))) + self.skip(x) + self.mean
