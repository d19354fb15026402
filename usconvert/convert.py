"""``convert``: model -> graph pass -> ``SlimmableNet``."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import nn

from .data import DataConfig
from .errors import ConversionError, WidthError
from .graph.analyze import ChannelAnalysis
from .graph.rewrite import rewrite
from .graph.trace import copy_model, trace
from .net import SlimmableNet
from .verify import self_check


def convert(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), *, divisor: int = 8,
            min_width: float = 0.25, source: dict[str, Any] | None = None, check: bool = True) -> SlimmableNet:
    """Convert ``model`` into a universally slimmable network. The model is not modified: its
    copy keeps the original weights and, in eval mode at width 1.0, computes the same outputs.

    ``check``: before returning, run the network against ``model`` on a batch of 1 (not the
    traced 2) at width 1.0, and against the masked reference at the minimum width and at a
    random nonuniform configuration (:func:`usconvert.verify.self_check`). A space that takes
    part in a mismatch is frozen with the reason; a mismatch at width 1.0 is a
    :class:`ConversionError`. The result is ``net.self_check``.

    ``input_size`` is one example's shape without the batch dim; ``divisor`` is the width
    divisor d; ``min_width`` the lower bound k0 of the width range. ``source`` records how to
    rebuild the model (set by :func:`usconvert.models.create`), so that ``save``/``load`` work.
    """
    if not isinstance(divisor, int) or divisor < 1:
        raise WidthError(f"divisor must be a positive integer, got {divisor!r}")
    if not 0.0 < float(min_width) <= 1.0:
        raise WidthError(f"min width must be in (0, 1], got {min_width!r}")
    if not input_size or any(int(s) < 1 for s in input_size):
        raise ConversionError(f"input size must be positive dimensions, got {tuple(input_size)}")
    copied = copy_model(model)
    reference = next(iter(copied.parameters()), None)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, *input_size, generator=generator)
    if reference is not None:
        example = example.to(device=reference.device, dtype=reference.dtype)
    traced = trace(copied, example)
    analysis = ChannelAnalysis(copied)
    analysis.run(traced.graphs)
    result = rewrite(traced, analysis)
    net = SlimmableNet(result.module, result.train_graph, result.eval_graph, result.spaces, result.layers,
                       divisor=divisor, min_width=float(min_width), input_size=tuple(int(s) for s in input_size),
                       source=source, rule_errors=analysis.rule_errors,
                       data_config=dataclasses.asdict(DataConfig.of(model)))
    if check:
        net.self_check = self_check(model, net)
    net.train(model.training)
    return net
