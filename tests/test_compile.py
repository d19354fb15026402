"""torch's own tools on a converted network: torch.compile at a fixed width, in train and eval
mode, computes what the network computes eagerly, and a width set afterwards is not served by
the graph compiled for the previous one."""

from pathlib import Path

import pytest
import torch

import usconvert
from helpers import without_dropout

DATA = Path(__file__).parent / "data"
SIZE = (3, 16, 16)


@pytest.mark.slow
def test_compiled_network_matches_eager_in_train_and_eval_and_follows_the_width():
    torch.manual_seed(0)
    model, source = usconvert.create(f"{DATA / 'tiny.py'}:tiny", num_classes=10)
    net = usconvert.convert(model, SIZE, source=source)
    without_dropout(net)  # eager and compiled runs would draw different masks
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, *SIZE, generator=g)
    usconvert.calibrate(net, [(torch.randn(32, *SIZE, generator=g),)], [0.25, 0.5], samples=32)
    compiled = torch.compile(net, backend="aot_eager")  # the whole tracing stack, without a C++ toolchain
    for width in (0.5, 0.25, 1.0):
        net.set_width(width)
        net.train()
        expected, got = net(x), compiled(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        got.sum().backward()
        assert all(p.grad is not None for p in net.parameters())
        net.zero_grad(set_to_none=True)
        net.eval()
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), net(x), rtol=1e-5, atol=1e-6)
