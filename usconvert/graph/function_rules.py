"""Rules for call_function and call_method nodes: the torch functions and tensor methods that
models use between their layers."""

from __future__ import annotations

import builtins
import operator

import torch
import torch.nn.functional as F

from .rules import RuleContext, TensorValue, fixed_value, function_rule, method_rule
from .spaces import SpaceLayout
from .tensor_rules import (broadcast, channel_count_sizes, computed_sizes, concatenate, index, keep_dims, permute,
                           pixel_shuffle, pixel_unshuffle, reduce, requested_sizes, reshape_value, sizes_read_from,
                           spatial_op, split)

# -- elementwise -------------------------------------------------------------------------------
_BINARY = ["add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "floor_divide",
           "remainder", "fmod", "pow", "maximum", "minimum", "fmax", "fmin", "atan2", "hypot", "eq", "ne",
           "gt", "ge", "lt", "le", "logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or",
           "where", "lerp", "addcmul", "addcdiv", "copysign", "xlogy"]
_UNARY = ["relu", "relu6", "sigmoid", "tanh", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt",
          "rsqrt", "abs", "neg", "negative", "sign", "sgn", "reciprocal", "square", "sin", "cos", "erf", "erfc",
          "erfinv", "floor", "ceil", "round", "trunc", "frac", "clamp", "clip", "clamp_min", "clamp_max",
          "nan_to_num", "logical_not", "bitwise_not", "isnan", "isinf", "isfinite", "sinh", "cosh", "asinh",
          "atan", "sigmoid", "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
          "bernoulli", "dropout", "alpha_dropout", "feature_alpha_dropout"]
_UNARY_METHODS_ONLY = ["contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type",
                       "type_as", "cpu", "cuda", "requires_grad_", "bernoulli_", "uniform_", "normal_", "fill_",
                       "zero_", "floor_", "div_", "mul_", "add_", "sub_", "clamp_", "clamp_min_", "clamp_max_",
                       "relu_", "sigmoid_", "tanh_", "neg_", "exp_", "sqrt_", "pow_", "hardtanh_"]
_F_UNARY = ["relu", "relu_", "relu6", "elu", "elu_", "selu", "celu", "gelu", "silu", "mish", "hardswish",
            "hardsigmoid", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "logsigmoid", "softplus",
            "softsign", "tanhshrink", "threshold", "hardshrink", "softshrink", "rrelu", "sigmoid", "tanh",
            "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"]


def _tensor_args(ctx: RuleContext) -> list[TensorValue]:
    return [v for v in list(ctx.args) + list(ctx.kwargs.values()) if isinstance(v, TensorValue)]


def elementwise(ctx: RuleContext):
    operands = _tensor_args(ctx)
    if not operands or not isinstance(ctx.out_shape, tuple):
        return ctx.fixed_output()
    return broadcast(ctx, operands)


def unary(ctx: RuleContext):
    x = ctx.arg(0, "input")
    if not isinstance(x, TensorValue):
        return elementwise(ctx)
    return keep_dims(ctx, x)


_OPERATORS = [operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
              operator.pow, operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.neg,
              operator.pos, operator.abs, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
              operator.ge, operator.and_, operator.or_, operator.invert]
function_rule(*_OPERATORS)(elementwise)
function_rule(*(getattr(torch, n) for n in _BINARY if hasattr(torch, n)))(elementwise)
function_rule(*(getattr(torch, n) for n in _UNARY if hasattr(torch, n)))(unary)
function_rule(*(getattr(F, n) for n in _F_UNARY if hasattr(F, n)))(unary)
method_rule(*_BINARY, *(n + "_" for n in _BINARY), "expand_as")(elementwise)
method_rule(*_UNARY, *_UNARY_METHODS_ONLY)(unary)


# -- shape and layout --------------------------------------------------------------------------
def _reshape_with_sizes(sizes_from: int):
    def rule(ctx: RuleContext):
        raw = list(ctx.node.args[sizes_from:]) or [ctx.node.kwargs.get("shape")]
        return reshape_value(ctx, ctx.arg(0, "input"), requested_sizes(ctx, raw), literals_follow=True,
                             computed=computed_sizes(raw), channel_counts=channel_count_sizes(ctx, raw),
                             same_dims=sizes_read_from(ctx, ctx.node.args[0], raw))
    return rule


method_rule("view", "reshape")(_reshape_with_sizes(1))
function_rule(torch.reshape)(_reshape_with_sizes(1))


@function_rule(torch.flatten, torch.squeeze, torch.unsqueeze)
@method_rule("flatten", "squeeze", "unsqueeze", "view_as", "reshape_as")
def computed_reshape(ctx: RuleContext):
    return reshape_value(ctx, ctx.arg(0, "input"))


@function_rule(torch.unflatten)
@method_rule("unflatten")
def unflatten(ctx: RuleContext):
    x = ctx.arg(0, "input")
    dim = ctx.arg(1, "dim") % len(x.shape)
    sizes = requested_sizes(ctx, [ctx.raw_arg(2, "sizes")])
    requested = [None] * dim + sizes + [None] * (len(ctx.out_shape) - dim - len(sizes))
    return reshape_value(ctx, x, requested)


@function_rule(torch.permute)
@method_rule("permute")
def permute_rule(ctx: RuleContext):
    order = ctx.args[1:] if ctx.node.op == "call_method" else [ctx.arg(1, "dims")]
    if len(order) == 1 and isinstance(order[0], (list, tuple)):
        order = order[0]
    if any(not isinstance(d, int) for d in order):
        return ctx.opaque("permute with computed dims")
    return permute(ctx, ctx.arg(0, "input"), list(order))


@function_rule(torch.transpose, torch.swapaxes, torch.swapdims)
@method_rule("transpose", "swapaxes", "swapdims")
def transpose(ctx: RuleContext):
    x = ctx.arg(0, "input")
    a, b = ctx.arg(1, "dim0"), ctx.arg(2, "dim1")
    order = list(range(len(x.shape)))
    order[a], order[b] = order[b], order[a]
    return permute(ctx, x, order)


@function_rule(torch.movedim, torch.moveaxis)
@method_rule("movedim", "moveaxis")
def movedim(ctx: RuleContext):
    x = ctx.arg(0, "input")
    source, destination = ctx.arg(1, "source"), ctx.arg(2, "destination")
    if not isinstance(source, int) or not isinstance(destination, int):
        return ctx.opaque("movedim of several dims")
    order = [d for d in range(len(x.shape)) if d != source % len(x.shape)]
    order.insert(destination % len(x.shape), source % len(x.shape))
    return permute(ctx, x, order)


@method_rule("expand", "broadcast_to")
@function_rule(torch.broadcast_to)
def expand(ctx: RuleContext):
    x = ctx.arg(0, "input")
    sizes = ctx.node.args[1:] if ctx.node.op == "call_method" else [ctx.raw_arg(1, "size")]
    requested = requested_sizes(ctx, list(sizes))
    out = ctx.out_shape
    lead = len(out) - len(x.shape)
    dims = [None] * lead
    for d, layout in enumerate(x.dims):
        if layout is not None and (out[lead + d] != x.shape[d] or requested[lead + d] is not None):
            ctx.spaces.freeze(layout, f"expand with a constant channel count at {ctx.where}")
            layout = None
        dims.append(layout)
    return TensorValue(out, tuple(dims))


# -- products and attention -------------------------------------------------------------------
def _contract(ctx: RuleContext, a: SpaceLayout | None, b: SpaceLayout | None) -> None:
    """Two dims summed against each other must shrink together."""
    if a is not None and b is not None:
        ctx.spaces.merge(a, b, ctx.where)
    elif a is not None or b is not None:
        ctx.spaces.freeze(a or b, f"contracted against fixed channels at {ctx.where}")


def _batch_dims(ctx: RuleContext, operands: list[TensorValue], out: tuple[int, ...]) -> tuple:
    return broadcast(ctx, [TensorValue(x.shape[:-2], x.dims[:-2]) for x in operands], out).dims


@function_rule(operator.matmul, torch.matmul, torch.bmm)
@method_rule("matmul", "bmm", "__matmul__")
def matmul(ctx: RuleContext):
    a, b = ctx.arg(0, "input"), ctx.arg(1, "other")
    out = ctx.out_shape
    if not (isinstance(a, TensorValue) and isinstance(b, TensorValue)) or len(a.shape) < 2 or len(b.shape) < 2:
        return ctx.opaque("matrix product with a vector")
    _contract(ctx, a.dims[-1], b.dims[-2])
    return TensorValue(out, _batch_dims(ctx, [a, b], out[:-2]) + (a.dims[-2], b.dims[-1]))


@function_rule(F.scaled_dot_product_attention)
def attention(ctx: RuleContext):
    """``softmax(q k^T * scale) v`` over (..., length, features): batch dims (heads) broadcast,
    q and k features contract, k and v share the key length."""
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    mask = ctx.arg(3, "attn_mask")
    out = ctx.out_shape
    if not all(isinstance(t, TensorValue) and len(t.shape) >= 2 for t in (q, k, v)):
        return ctx.opaque("attention without (..., length, features) operands")
    _contract(ctx, q.dims[-1], k.dims[-1])
    if q.dims[-1] is not None and ctx.kwargs.get("scale") is None:
        ctx.spaces.freeze(q.dims[-1], f"the attention scale depends on the feature count at {ctx.where}")
    _contract(ctx, k.dims[-2], v.dims[-2])
    batch = _batch_dims(ctx, [q, k, v], out[:-2])
    if isinstance(mask, TensorValue):  # a mask broadcasts against the logits (..., q length, k length)
        logits = TensorValue(out[:-1] + (k.shape[-2],), batch + (q.dims[-2], k.dims[-2]))
        broadcast(ctx, [logits, mask], logits.shape)
    return TensorValue(out, batch + (q.dims[-2], v.dims[-1]))


# -- reductions --------------------------------------------------------------------------------
_REDUCTIONS = ["mean", "sum", "amax", "amin", "std", "var", "prod", "logsumexp", "nansum", "nanmean", "norm",
               "all", "any", "count_nonzero"]


@function_rule(*(getattr(torch, n) for n in _REDUCTIONS if hasattr(torch, n)))
@method_rule(*_REDUCTIONS)
def reduction(ctx: RuleContext):
    name = ctx.node.target if isinstance(ctx.node.target, str) else getattr(ctx.node.target, "__name__", "")
    position = 2 if name == "norm" else 1  # norm(input, p, dim, keepdim)
    dims = ctx.arg(position, "dim")
    if isinstance(dims, bool) or not isinstance(dims, (int, list, tuple)):
        dims = None
    return reduce(ctx, ctx.arg(0, "input"), dims, ctx.arg(position + 1, "keepdim", False) is True)


@function_rule(torch.max, torch.min, torch.argmax, torch.argmin)
@method_rule("max", "min", "argmax", "argmin")
def max_min(ctx: RuleContext):
    x, dim = ctx.arg(0, "input"), ctx.arg(1, "dim")
    if isinstance(dim, TensorValue):
        return elementwise(ctx)
    if not isinstance(dim, int):
        return ctx.opaque("reduction over all dims")
    d = dim % len(x.shape)
    ctx.spaces.freeze(x.dims[d], f"reduction over channels at {ctx.where}")
    # the other dims keep their spaces: the max over tokens of a channels-last (B, N, C) is (B, C)
    dims = x.dims[:d] + ((None,) if ctx.arg(2, "keepdim", False) is True else ()) + x.dims[d + 1:]
    shapes = ctx.out_shape  # argmax: one shape; max: (values, indices)
    results = [shapes] if shapes and all(isinstance(s, int) for s in shapes) else list(shapes or ())
    if not results or any(not isinstance(s, tuple) or len(s) != len(dims) for s in results):
        return ctx.opaque("reduction with an unexpected result")
    values = [TensorValue(s, dims) for s in results]
    return values[0] if results[0] is shapes else tuple(values)


@function_rule(torch.softmax, torch.log_softmax, F.softmax, F.log_softmax, F.softmin, F.normalize, F.glu,
               torch.cumsum, torch.cumprod)
@method_rule("softmax", "log_softmax", "cumsum", "cumprod")
def along_dim(ctx: RuleContext):
    """Ops that mix values along one dim: that dim's spaces freeze, the others pass."""
    x = ctx.arg(0, "input")
    name = getattr(ctx.node.target, "__name__", ctx.node.target)
    default = 1 if name in ("normalize",) else -1
    dim = ctx.arg(2 if name == "normalize" else 1, "dim", default)
    if dim is None:
        return ctx.opaque(f"{name} without a dim")
    n = len(x.shape)
    ctx.spaces.freeze(x.dims[dim % n], f"{name} over channels at {ctx.where}")
    dims = list(x.dims)
    dims[dim % n] = None
    return TensorValue(ctx.out_shape, tuple(dims)) if ctx.out_shape == x.shape else ctx.opaque(name)


# -- spatial -----------------------------------------------------------------------------------
def _spatial(n: int):
    def rule(ctx: RuleContext):
        return spatial_op(ctx, ctx.arg(0, "input"), n)
    return rule


for _n, _fns in {1: ["avg_pool1d", "max_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d", "lp_pool1d"],
                 2: ["avg_pool2d", "max_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "lp_pool2d"],
                 3: ["avg_pool3d", "max_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d"]}.items():
    function_rule(*(getattr(F, f) for f in _fns if hasattr(F, f)),
                  *(getattr(torch, f) for f in _fns if hasattr(torch, f)))(_spatial(_n))


@function_rule(F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear)
def interpolate(ctx: RuleContext):
    x = ctx.arg(0, "input")
    return spatial_op(ctx, x, len(x.shape) - 2)


@function_rule(F.pad)
def pad(ctx: RuleContext):
    x = ctx.arg(0, "input")
    widths = ctx.arg(1, "pad")
    if not isinstance(widths, (list, tuple)) or any(not isinstance(w, int) for w in widths):
        return ctx.opaque("padding by computed amounts")
    return spatial_op(ctx, x, len(widths) // 2)


@function_rule(F.pixel_shuffle, torch.pixel_shuffle)
def pixel_shuffle_fn(ctx: RuleContext):
    return pixel_shuffle(ctx, ctx.arg(0, "input"), ctx.arg(1, "upscale_factor"))


@function_rule(F.pixel_unshuffle, torch.pixel_unshuffle)
def pixel_unshuffle_fn(ctx: RuleContext):
    return pixel_unshuffle(ctx, ctx.arg(0, "input"), ctx.arg(1, "downscale_factor"))


# -- concatenation, splitting, indexing --------------------------------------------------------
@function_rule(torch.cat, torch.concat, torch.concatenate)
def cat(ctx: RuleContext):
    tensors = ctx.arg(0, "tensors")
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, TensorValue) for t in tensors):
        return ctx.opaque("concatenation of unknown values")
    return concatenate(ctx, list(tensors), ctx.arg(1, "dim", 0))


@function_rule(torch.stack)
def stack(ctx: RuleContext):
    tensors = ctx.arg(0, "tensors")
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, TensorValue) for t in tensors):
        return ctx.opaque("stack of unknown values")
    dim = ctx.arg(1, "dim", 0) % len(ctx.out_shape)
    merged = broadcast(ctx, list(tensors), ctx.out_shape[:dim] + ctx.out_shape[dim + 1:])
    return TensorValue(ctx.out_shape, merged.dims[:dim] + (None,) + merged.dims[dim:])


@function_rule(torch.split, torch.chunk, torch.tensor_split)
@method_rule("split", "chunk", "tensor_split")
def split_rule(ctx: RuleContext):
    x = ctx.arg(0, "input")
    if not isinstance(ctx.out_shape, (list, tuple)):
        return ctx.opaque("split")
    return split(ctx, x, ctx.arg(2, "dim", 0))


@function_rule(torch.unbind)
@method_rule("unbind")
def unbind(ctx: RuleContext):
    x = ctx.arg(0, "input")
    dim = ctx.arg(1, "dim", 0) % len(x.shape)
    ctx.spaces.freeze(x.dims[dim], f"unbind over channels at {ctx.where}")
    dims = x.dims[:dim] + x.dims[dim + 1:]
    return type(ctx.out_shape)(TensorValue(s, dims) for s in ctx.out_shape)


@function_rule(operator.getitem)
def getitem(ctx: RuleContext):
    container, item = ctx.args[0], ctx.raw_arg(1, "item")
    if isinstance(container, TensorValue):
        return index(ctx, container, item)
    if isinstance(container, (list, tuple)) and isinstance(item, (int, slice)):
        return container[item]
    return fixed_value(ctx.out_shape)


# -- values that are not tensors ---------------------------------------------------------------
@method_rule("size", "dim", "numel", "nelement", "element_size", "get_device", "is_contiguous", "stride")
@function_rule(builtins.len, builtins.int, builtins.float, torch.numel, torch._assert)
def no_tensor(ctx: RuleContext):
    return None


@function_rule(builtins.getattr)
def tensor_attribute(ctx: RuleContext):
    x, name = ctx.args[0], ctx.args[1]
    if isinstance(x, TensorValue) and name in ("T", "mT"):
        order = list(range(len(x.shape)))
        if name == "T":
            order.reverse()
        else:
            order[-1], order[-2] = order[-2], order[-1]
        return permute(ctx, x, order)
    return fixed_value(ctx.out_shape) if name not in ("shape", "dtype", "device", "ndim", "is_cuda") else None
