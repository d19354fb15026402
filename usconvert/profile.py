"""Counting what a width costs: multiply-adds (fvcore), parameters in use, and the share of
the model's multiply-adds that scale with width."""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from .net import SlimmableNet, Width
from .nn import SlimConv
from .nn.layout import Layout

# The paper counts convolutions and fully connected layers (here recurrent layers too); norms and
# pools are reported apart.
RECURRENT_OPERATORS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
LAYER_OPERATORS = ("conv", "_convolution_mode", "linear", "addmm", "matmul", "bmm", "einsum", "mm",
                   *RECURRENT_OPERATORS)


@dataclass
class MacCount:
    macs: int  # convolutions and linear layers: the paper's convention
    total: int  # everything fvcore counts, norms and pools included
    by_layer: dict[str, int] = field(default_factory=dict)


def count_macs(net: SlimmableNet, width: Width | None = None, input_size: tuple[int, ...] | None = None) -> MacCount:
    """Multiply-adds of one example at ``width`` (default: the current width), counted by
    fvcore on the network as it runs at that width."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore's import scripts a function with torch.jit
        from fvcore.nn import FlopCountAnalysis
    previous = net.width
    was_training = net.training
    if width is not None:
        net.set_width(width)
    parameter = next(net.parameters())
    example = torch.zeros(1, *(input_size or net.input_size), device=parameter.device, dtype=parameter.dtype)
    try:
        net.eval()
        with net.sliced_statistics(), torch.no_grad(), unfused_attention(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fvcore's jit tracing warns about deprecations
            analysis = FlopCountAnalysis(net.model, (example,))
            analysis.set_op_handle("aten::_convolution_mode", _convolution_with_string_padding)
            for operator in RECURRENT_OPERATORS:
                analysis.set_op_handle(f"aten::{operator}", _recurrent)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            by_operator = analysis.by_operator()
            by_module = analysis.by_module_and_operator()
    finally:
        net.set_width(previous)
        net.train(was_training)
    macs = sum(v for op, v in by_operator.items() if op in LAYER_OPERATORS)
    by_layer = {name: sum(v for op, v in by_module.get(name, {}).items() if op in LAYER_OPERATORS)
                for name in net.layers}
    return MacCount(int(macs), int(sum(by_operator.values())), {k: int(v) for k, v in by_layer.items()})


@contextmanager
def unfused_attention() -> Iterator[None]:
    """Within the block, ``nn.MultiheadAttention`` and ``nn.TransformerEncoder(Layer)`` compute
    with their linear layers. In eval mode without gradients they otherwise run one native
    kernel (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``) whose
    projections neither fvcore nor ``FlopCounterMode`` counts: torchvision's ViT-B/16 read 11.3G
    multiply-adds instead of 16.8G. Counting runs the path that computes the same products."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def _convolution_with_string_padding(inputs: list[Any], outputs: list[Any]) -> int:
    """A convolution with ``padding="same"`` or ``"valid"`` (ConvMixer's depthwise layers): torch
    records it as ``aten::_convolution_mode``, for which fvcore has no handle and counts 0."""
    from fvcore.nn.jit_handles import conv_flop_count, get_shape
    return conv_flop_count(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0]), transposed=False)


def _recurrent(inputs: list[Any], outputs: list[Any]) -> int:
    """An LSTM, GRU or RNN, for which fvcore has no handle and counts 0: every weight matrix
    (input, hidden, projection; each layer and direction) multiplies once per step of each
    sequence. Its weights reach the op as its last list of tensors (the first, of an LSTM, is its
    initial state), built in the traced graph."""
    from fvcore.nn.jit_handles import get_shape
    steps = math.prod(get_shape(inputs[0])[:-1])  # (batch, time) in either order, time alone, or packed
    weights_list = [v for v in inputs if str(v.type()) == "List[Tensor]"][-1]
    weights = [get_shape(v) for v in weights_list.node().inputs()]
    return steps * sum(rows * columns for rows, columns in (w for w in weights if len(w) == 2))


# torch's FlopCounterMode names by aten op: the layers' products (2 flops per multiply-add)
TORCH_LAYER_OPERATORS = ("convolution", "convolution_backward", "mm", "addmm", "bmm", "baddbmm")


@dataclass
class TorchFlopCount:
    layer_macs: int  # convolutions and matrix products, as fvcore's ``macs``
    attention_macs: int  # fused scaled-dot-product attention, which fvcore does not count
    by_operator: dict[str, int] = field(default_factory=dict)  # flops, torch's unit


def count_torch_flops(net: SlimmableNet, width: Width | None = None, *, train: bool = False,
                      batch: int = 1) -> TorchFlopCount:
    """The same count by torch's own ``FlopCounterMode``, as a cross-check of :func:`count_macs`.
    ``train``: a forward and backward pass in train mode (the counts are then of both)."""
    from torch.utils.flop_counter import FlopCounterMode
    previous, was_training = net.width, net.training
    if width is not None:
        net.set_width(width)
    parameter = next(net.parameters())
    example = torch.randn(batch, *net.input_size, device=parameter.device, dtype=parameter.dtype)
    counter = FlopCounterMode(display=False)
    try:
        net.train(train)
        if train:
            with unfused_attention(), counter:
                output = net(example)
                (output if isinstance(output, torch.Tensor) else output[0]).float().sum().backward()
            net.zero_grad(set_to_none=True)
        else:
            with net.sliced_statistics(), torch.no_grad(), unfused_attention(), counter:
                net(example)
    finally:
        net.set_width(previous)
        net.train(was_training)
    by_operator = {str(op).split(".")[1]: int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    layer = sum(n for op, n in by_operator.items() if op in TORCH_LAYER_OPERATORS)
    attention = sum(n for op, n in by_operator.items() if "attention" in op)
    return TorchFlopCount(layer // (2 * batch), attention // (2 * batch), by_operator)


def active_size(tensor: torch.Tensor, layouts: list[tuple[int, Layout]]) -> int:
    """Elements of ``tensor`` in use at the current width, given the dims that follow layouts."""
    sizes = list(tensor.shape)
    for dim, layout in layouts:
        sizes[dim] = layout.active_size()
    return math.prod(sizes)


def active_parameters(net: SlimmableNet) -> int:
    """Parameters in use at the current width, counted from the sliced shapes."""
    counted: set[int] = set()
    total = 0
    for layer in net.layers.values():
        for p in layer.parameters(recurse=False):
            counted.add(id(p))
            total += active_size(p, layer.tensor_layouts(p))
    parameters = dict(net.model.named_parameters())
    for target, helper in net.sliced_tensors():  # parameters used outside layers (buffers are no parameters)
        p = parameters.get(target)
        if p is not None and id(p) not in counted:
            counted.add(id(p))
            total += active_size(p, [(dim, layout) for dim, layout in enumerate(helper.layouts) if layout is not None])
    return total + sum(p.numel() for p in net.parameters() if id(p) not in counted)


def slimmable_share(net: SlimmableNet, full: MacCount) -> float:
    """The share of the layers' multiply-adds at width 1.0 in layers that some width shrinks."""
    if not full.macs:
        return 0.0
    scaled = 0
    for name, layer in net.layers.items():
        layouts = [getattr(layer, k, None) for k in ("in_layout", "out_layout", "channel_layout")]
        if any(layout is not None and any(not s.frozen for s, _ in layout.segments) for layout in layouts):
            scaled += full.by_layer.get(name, 0)
    return scaled / full.macs


def convolution_share(net: SlimmableNet, full: MacCount) -> float:
    """The share of multiply-adds at width 1.0 in convolutions: at least half makes a CNN."""
    conv = sum(macs for name, macs in full.by_layer.items() if isinstance(net.layers[name], SlimConv))
    return conv / full.macs if full.macs else 0.0


def summary(net: SlimmableNet) -> dict[str, Any]:
    """What ``inspect`` reports: spaces, frozen reasons, multiply-adds at 1.0 and min width."""
    full = count_macs(net, 1.0)
    smallest = count_macs(net, net.min_width)
    previous = net.width
    net.set_width(net.min_width)
    min_active = {space.name: space.active for space in net.spaces}
    min_params = active_parameters(net)
    net.set_width(previous)
    spaces = [{
        "name": s.name, "channels": s.size, "step": s.step * s.unit_channels, "frozen": s.frozen,
        "reasons": s.frozen_reasons, "active_at_min_width": min_active[s.name], "layers": s.members,
    } for s in net.spaces]
    return {
        "source": net.source, "input_size": list(net.input_size), "divisor": net.divisor, "min_width": net.min_width,
        "spaces": spaces, "slimmable_spaces": len(net.slimmable_spaces), "frozen_spaces": len(net.spaces) - len(
            net.slimmable_spaces),
        "multiply_adds": {"width_1.0": full.macs, "min_width": smallest.macs,
                          "min_over_full": smallest.macs / full.macs if full.macs else None,
                          "width_1.0_with_norms_and_pools": full.total},
        "slimmable_share": slimmable_share(net, full),
        "convolution_share": convolution_share(net, full),
        "parameters": {"width_1.0": sum(p.numel() for p in net.parameters()), "min_width": min_params},
        "rule_errors": net.rule_errors,
    }


@dataclass
class Latency:
    median_ms: float
    iqr_ms: float  # the interquartile range: a wide one means a busy or throttled machine

    @property
    def spread(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms else 0.0


WIDE_SPREAD = 0.25  # an interquartile range above this share of the median is reported


def measure_latency(net: SlimmableNet, batch: int = 1, repeats: int = 20, warmup: int = 3) -> Latency:
    """Milliseconds of an eval forward pass at the current width: median and interquartile range."""
    p = next(net.parameters())
    x = torch.randn(batch, *net.input_size, device=p.device, dtype=p.dtype)
    was_training = net.training
    net.eval()
    times = []
    with torch.no_grad(), net.sliced_statistics():
        for i in range(warmup + repeats):
            if p.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            net(x)
            if p.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - start))
    net.train(was_training)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Latency(statistics.median(times), quartiles[2] - quartiles[0])


def profile(net: SlimmableNet, widths: list[Width], *, batch: int = 16, repeats: int = 20,
            per_layer: bool = False) -> list[dict[str, Any]]:
    """Multiply-adds, parameters in use and measured latency (median and interquartile range,
    batch 1 and ``batch``) at each width; with ``per_layer``, each layer's share of the
    multiply-adds. Rows carry the field names of the spectrum's rows."""
    rows = []
    previous = net.width
    try:
        for width in widths:
            net.set_width(width)
            macs = count_macs(net)
            row: dict[str, Any] = {**net.width_fields(), "multiply_adds": macs.macs,
                                   "parameters": active_parameters(net)}
            for size, runs in ((1, repeats), (batch, max(3, repeats // 4))):
                latency = measure_latency(net, size, runs)
                row[f"latency_ms_batch_{size}"] = latency.median_ms
                row[f"latency_iqr_ms_batch_{size}"] = latency.iqr_ms
            if per_layer:
                row["layers"] = {name: {"multiply_adds": n, "share": n / macs.macs if macs.macs else 0.0}
                                 for name, n in macs.by_layer.items() if n}
            rows.append(row)
    finally:
        net.set_width(previous)
    return rows
