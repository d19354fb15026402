"""Shared test helpers: the standard equivalence checks of a converted model, on informative
values (random norms, and random values for what a model starts at one value, so that a wrong
channel shows)."""

from __future__ import annotations

import random

import torch
from torch import nn

import usconvert
from usconvert.verify import prefix_error, relative_error, write_informative_values

TOL = 1e-9  # float64 throughout


def random_configuration(net: usconvert.SlimmableNet, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    return {space.name: rng.uniform(net.min_width, 1.0) for space in net.slimmable_spaces}


def check_conversion(model: nn.Module, input_size: tuple[int, ...], *, batch: int = 3, min_width: float = 0.25,
                     divisor: int = 8, widths: tuple = (), batches: tuple[int, ...] = (),
                     configurations: int = 1, tol: float = TOL) -> usconvert.SlimmableNet:
    """Convert ``model`` (float64, informative values) without the conversion self-check (these tests
    check the rules, which the self-check would otherwise cover up by freezing), and assert
    equivalence at 1.0 and prefix equivalence at the minimum width, a middle width and random
    nonuniform configurations, at ``batch`` and at every one of ``batches``, within ``tol``
    (looser only for a model that computes in float32 whatever its parameters' type)."""
    torch.manual_seed(0)
    model = write_informative_values(model.double().eval())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    net = usconvert.convert(model, input_size, divisor=divisor, min_width=min_width, check=False)
    net.eval()
    randoms = [random_configuration(net, seed) for seed in range(configurations)]
    for size in (batch, *batches):
        x = torch.randn(size, *input_size, dtype=torch.float64)
        net.set_width(1.0)
        with torch.no_grad():
            assert relative_error(net(x), model(x)) <= tol, f"differs at width 1.0 on a batch of {size}"
        for width in (min_width, 0.5 * (1 + min_width), *randoms, *widths):
            if isinstance(width, dict) and not width:
                continue
            error = prefix_error(model, net, width, x)
            assert error <= tol, f"prefix equivalence fails at {width} on a batch of {size}: {error:.2e}"
    net.set_width(1.0)
    assert [type(m) for m in model.modules()] == types, "convert changed the model's modules"
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "convert changed the model's tensors"
    return net


def frozen_reasons(net: usconvert.SlimmableNet) -> list[str]:
    return [reason for space in net.spaces for reason in space.frozen_reasons]


def without_dropout(module: nn.Module) -> nn.Module:
    """Dropout off (p = 0) in place, for tests that compare two runs that would draw other masks."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return module
