"""Rules for modules called as leaves: the layers that own channels, and the ones that pass
channels through unchanged."""

from __future__ import annotations

from torch import nn
from torch.nn.modules import activation, dropout, padding, pixelshuffle, pooling

from ..nn.kinds import (BATCH_NORM_TYPES, CONV_TYPES, GROUP_NORM_TYPES, LAYER_NORM_TYPES, LINEAR_TYPES,
                        NOT_SLIMMABLE_CONV_TYPES, RECURRENT_TYPES, layer_norm_dim, layer_norm_size)
from .rules import RuleContext, TensorValue, module_rule
from .tensor_rules import keep_dims, mix_along, pixel_shuffle, pixel_unshuffle, reshape_value, spatial_op


@module_rule(*NOT_SLIMMABLE_CONV_TYPES)
def transposed_conv(ctx: RuleContext):
    return ctx.opaque("transposed convolution (not supported yet)")


@module_rule(*CONV_TYPES)
def conv(ctx: RuleContext):
    m, x = ctx.module, ctx.arg(0, "input")
    cdim = len(x.shape) - len(m.kernel_size) - 1
    kept = [None] * len(ctx.out_shape)  # the batch, and a dim the kernel maps position to position, keep theirs
    for d, layout in enumerate(x.dims):
        if d < cdim or (d > cdim and _pointwise_along(m, d - cdim - 1)):
            kept[d] = layout
        elif d != cdim:
            ctx.spaces.freeze(layout, f"convolution over a channel dimension at {ctx.where}")
    in_layout = x.dims[cdim]
    if m.groups == 1:
        out_layout = ctx.new_layout("out", m.out_channels)
    else:
        per_group_in, per_group_out = m.in_channels // m.groups, m.out_channels // m.groups
        groups = ctx.new_layout("groups", m.groups)
        if in_layout is None:
            ctx.spaces.freeze(groups, f"grouped convolution of fixed input channels at {ctx.where}")
        else:
            ctx.spaces.merge(in_layout, ((groups[0][0], per_group_in),), ctx.where)
        out_layout = ((groups[0][0], per_group_out),)
    ctx.analysis.bind(ctx.node.target, "conv", {"in": in_layout, "out": out_layout})
    kept[cdim] = out_layout
    return TensorValue(ctx.out_shape, tuple(kept))


def _pointwise_along(m: nn.Module, i: int) -> bool:
    """Whether output position j of spatial dim i reads input position j alone (CoaT's
    ``Conv1d(3, 1, 1)`` over (B, scales, C) runs along the channels): a prefix gives a prefix."""
    padding = m.padding if isinstance(m.padding, str) else m.padding[i]
    return m.kernel_size[i] == 1 and m.stride[i] == 1 and padding in (0, "same", "valid")


@module_rule(*LINEAR_TYPES)
def linear(ctx: RuleContext):
    x = ctx.arg(0, "input")
    out_layout = ctx.new_layout("out", ctx.module.out_features)
    ctx.analysis.bind(ctx.node.target, "linear", {"in": x.dims[-1], "out": out_layout})
    return TensorValue(ctx.out_shape, x.dims[:-1] + (out_layout,))


@module_rule(*RECURRENT_TYPES)
def recurrent(ctx: RuleContext):
    """An LSTM, GRU or RNN reads its input features through the first layer's input weights
    (Sequencer's LSTMs over rows and columns): they slim. It recurs along the sequence, so a
    channel space there freezes, and so does one in the batch or in an initial state; its
    outputs and states are its hidden units, which stay whole (nn/recurrent.py says why)."""
    x = ctx.arg(0, "input")
    if not isinstance(x, TensorValue):
        return ctx.opaque("a packed sequence into a recurrent layer")
    for layout in x.dims[:-1]:
        ctx.spaces.freeze(layout, f"recurrent layer along or across a channel dimension at {ctx.where}")
    hx = ctx.arg(1, "hx")  # a tensor (GRU, RNN) or a pair (LSTM)
    for state in ([hx] if isinstance(hx, TensorValue) else hx or ()):
        for layout in state.dims:
            ctx.spaces.freeze(layout, f"initial state of a recurrent layer at {ctx.where}")
    ctx.analysis.bind(ctx.node.target, "recurrent", {"in": x.dims[-1]})
    return ctx.fixed_output()


@module_rule(*BATCH_NORM_TYPES)
def batch_norm(ctx: RuleContext):
    x = ctx.arg(0, "input")
    _freeze_statistics_dims(ctx, x.dims[:1] + x.dims[2:])  # training statistics over batch and positions
    ctx.analysis.bind(ctx.node.target, "batch_norm", {"channels": x.dims[1]}, dim=1)
    return keep_dims(ctx, x)


@module_rule(*GROUP_NORM_TYPES)
def group_norm(ctx: RuleContext):
    m, x = ctx.module, ctx.arg(0, "input")
    _freeze_statistics_dims(ctx, x.dims[2:])  # statistics over each group's positions
    layout = x.dims[1]
    if layout is not None and m.num_groups > 1:
        groups = ctx.new_layout("groups", m.num_groups)
        ctx.spaces.merge(layout, ((groups[0][0], m.num_channels // m.num_groups),), ctx.where)
    ctx.analysis.bind(ctx.node.target, "group_norm", {"channels": layout}, dim=1)
    return keep_dims(ctx, x)


def _freeze_statistics_dims(ctx: RuleContext, dims: tuple) -> None:
    """A norm's statistics over other dims than the channels it normalises: a space there (a
    token convolution's positions reshaped onto the rows) would change them, so it stays whole."""
    for layout in dims:
        ctx.spaces.freeze(layout, f"{type(ctx.module).__name__} statistics over a channel dimension at {ctx.where}")


@module_rule(*LAYER_NORM_TYPES)
def layer_norm(ctx: RuleContext):
    m, x = ctx.module, ctx.arg(0, "input")
    if len(getattr(m, "normalized_shape", (None,))) != 1:
        return ctx.opaque("layer norm over several dimensions")
    size = layer_norm_size(m)
    dim = layer_norm_dim(m)
    if dim is not None:
        dim %= len(x.shape)
    else:  # a subclass may permute (timm's LayerNorm2d normalises dim 1): find the dim by size
        candidates = [d for d in (1, len(x.shape) - 1) if d < len(x.shape) and x.shape[d] == size]
        with_space = [d for d in candidates if x.dims[d] is not None]
        if len(set(candidates)) == 1 or len(with_space) == 1:
            dim = with_space[0] if len(with_space) == 1 else candidates[0]
        else:
            return ctx.opaque(f"cannot tell which dimension {type(m).__name__} normalises")
    # Global Response Normalization also reduces over positions
    _freeze_statistics_dims(ctx, tuple(x.dims[d] for d in getattr(m, "spatial_dim", ())))
    ctx.analysis.bind(ctx.node.target, "layer_norm", {"channels": x.dims[dim]}, dim=dim)
    return keep_dims(ctx, x)


_ELEMENTWISE_ACTIVATIONS = tuple(
    cls for name, cls in vars(activation).items()
    if isinstance(cls, type) and issubclass(cls, nn.Module)
    and name not in {"Module", "Softmax", "Softmin", "LogSoftmax", "Softmax2d", "GLU", "MultiheadAttention",
                     "PReLU", "NonDynamicallyQuantizableLinear", "Parameter"}
)


@module_rule(*_ELEMENTWISE_ACTIVATIONS, dropout._DropoutNd, nn.Identity)
def elementwise_module(ctx: RuleContext):
    return keep_dims(ctx, ctx.arg(0, "input"))


@module_rule(nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d)
def softmax_module(ctx: RuleContext):
    x, m = ctx.arg(0, "input"), ctx.module
    dim = -3 if isinstance(m, nn.Softmax2d) else m.dim
    if dim is None:  # torch's legacy implicit dim
        dim = 0 if len(x.shape) in (0, 1, 3) else 1
    return mix_along(ctx, x, dim, type(m).__name__)


@module_rule(nn.PReLU)
def prelu(ctx: RuleContext):
    if ctx.module.num_parameters == 1:
        return keep_dims(ctx, ctx.arg(0, "input"))
    return ctx.opaque("per-channel PReLU (not supported yet)")


def _spatial_dims(module: nn.Module) -> int:
    name = type(module).__name__
    return 3 if "3d" in name else 1 if "1d" in name else 2


@module_rule(pooling._MaxPoolNd, pooling._AvgPoolNd, pooling._AdaptiveAvgPoolNd, pooling._AdaptiveMaxPoolNd,
             pooling._LPPoolNd, padding._ConstantPadNd, padding._ReflectionPadNd, padding._ReplicationPadNd,
             nn.Upsample)
def spatial_module(ctx: RuleContext):
    return spatial_op(ctx, ctx.arg(0, "input"), _spatial_dims(ctx.module))


@module_rule(pixelshuffle.PixelShuffle)
def pixel_shuffle_module(ctx: RuleContext):
    return pixel_shuffle(ctx, ctx.arg(0, "input"), ctx.module.upscale_factor)


@module_rule(pixelshuffle.PixelUnshuffle)
def pixel_unshuffle_module(ctx: RuleContext):
    return pixel_unshuffle(ctx, ctx.arg(0, "input"), ctx.module.downscale_factor)


@module_rule(nn.Flatten, nn.Unflatten)
def reshape_module(ctx: RuleContext):
    x, m = ctx.arg(0, "input"), ctx.module
    requested = None
    if isinstance(m, nn.Unflatten):
        dim = m.dim % len(x.shape)
        requested = [None] * dim + [s if s != -1 else None for s in m.unflattened_size]
        requested += [None] * (len(ctx.out_shape) - len(requested))
    return reshape_value(ctx, x, requested)
