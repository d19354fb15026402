"""The property every converted model must have, checked on one model of the grammar: equal to
the original at width 1.0 on batches 1, 2 and 3; equal to the masked reference at the minimum
width and at nonuniform widths (a space whose rule cannot prove that is frozen, which keeps it
whole, so the check holds there too); and the export of each width equal to the network."""

from __future__ import annotations

import torch
from torch import fx

import usconvert
from fuzz_grammar import SIZE, GrammarModel
from helpers import random_configuration
from usconvert.errors import ConversionError
from usconvert.graph.analyze import input_carriers
from usconvert.export import export
from usconvert.verify import prefix_error, relative_error, spread_configuration, write_informative_values

TOL = 1e-9  # float64


def check_model(ops: list[tuple]) -> usconvert.SlimmableNet | None:
    """Assert the property for the model of ``ops``; None where torch.fx cannot trace it."""
    torch.manual_seed(0)
    model = write_informative_values(GrammarModel(ops).double().eval())
    try:
        net = usconvert.convert(model, SIZE, divisor=4, min_width=0.25, check=False)
    except ConversionError as exc:
        if "cannot trace" in str(exc):
            return None
        raise
    net.eval()
    for batch in (1, 2, 3):
        x = torch.randn(batch, *SIZE, dtype=torch.float64)
        with torch.no_grad():
            error = relative_error(net(x), model(x))
        assert error <= TOL, f"width 1.0 differs on a batch of {batch} ({error:.1e}): {ops}"
    x = torch.randn(3, *SIZE, dtype=torch.float64)
    for width in (net.min_width, spread_configuration(net, 0), random_configuration(net, 1)):
        if isinstance(width, dict) and not width:
            continue
        error = prefix_error(model, net, width, x)
        assert error <= TOL, f"prefix equivalence fails at {width} ({error:.1e}): {ops}"
        net.set_width(width)
        net.eval_cache = False
        with net.sliced_statistics(), torch.no_grad():
            error = relative_error(export(net)(x), net(x))
        assert error <= TOL, f"the export differs at {width} ({error:.1e}): {ops}"
    net.set_width(1.0)
    assert_every_space_narrows_an_activation(net, x, ops)
    return net


def assert_every_space_narrows_an_activation(net: usconvert.SlimmableNet, x: torch.Tensor, ops: list[tuple]) -> None:
    """A slimmable space that narrows no tensor computed from the input (only constants, such as
    a position-bias network's hidden width) saves nothing per input and only takes capacity: the
    graph pass must freeze it."""
    full = activation_shapes(net, x)
    for space in net.slimmable_spaces:
        net.set_width({space.name: net.min_width})
        if space.active < space.size:
            assert activation_shapes(net, x) != full, f"{space.name} narrows no activation: {ops}"
    net.set_width(1.0)


def activation_shapes(net: usconvert.SlimmableNet, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """The shape of every tensor the network's graph computes from its input."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    from_input: set[fx.Node] = set()

    class Recorder(fx.Interpreter):
        def run_node(self, node: fx.Node):
            result = super().run_node(node)
            from_input.update(input_carriers(node, from_input))
            if node in from_input and isinstance(result, torch.Tensor):
                shapes.append((node.name, tuple(result.shape)))
            return result

    with net.sliced_statistics(), torch.no_grad():
        Recorder(net.model).run(x)
    return shapes
