"""Rules for call_function and call_method nodes: the torch functions and tensor methods that
models use between their layers."""

from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx
from torch.amp.autocast_mode import _enter_autocast, _exit_autocast

from .rules import RuleContext, SizeValue, TensorValue, fixed_value, function_rule, method_rule
from .spaces import SpaceLayout
from .trace import shape_guard
from .tensor_rules import (assign, broadcast, concatenate, flat_sizes, index, keep_dims, mix_along, permute,
                           pixel_shuffle, pixel_unshuffle, reduce, reshape_value, spatial_op, split)

# -- elementwise -------------------------------------------------------------------------------
_BINARY = ["add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "floor_divide",
           "remainder", "fmod", "pow", "maximum", "minimum", "fmax", "fmin", "atan2", "hypot", "eq", "ne",
           "gt", "ge", "lt", "le", "logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or",
           "where", "lerp", "addcmul", "addcdiv", "copysign", "xlogy", "clamp", "clip", "clamp_min", "clamp_max"]
_UNARY = ["relu", "relu6", "sigmoid", "tanh", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt",
          "rsqrt", "abs", "neg", "negative", "sign", "sgn", "reciprocal", "square", "sin", "cos", "erf", "erfc",
          "erfinv", "floor", "ceil", "round", "trunc", "frac", "nan_to_num", "logical_not", "bitwise_not", "isnan",
          "isinf", "isfinite", "sinh", "cosh", "asinh", "atan", "zeros_like", "ones_like", "empty_like",
          "full_like", "rand_like", "randn_like", "bernoulli", "dropout", "alpha_dropout", "feature_alpha_dropout"]
_UNARY_METHODS_ONLY = ["contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "cpu", "cuda",
                       "requires_grad_", "bernoulli_", "uniform_", "normal_", "fill_", "zero_", "relu_",
                       "sigmoid_", "tanh_", "neg_", "exp_", "sqrt_", "floor_", "hardtanh_"]
# a tensor argument of these is read for its dtype or device only
_METADATA_METHODS = ["to", "type", "type_as"]
_F_UNARY = ["relu", "relu_", "relu6", "elu", "elu_", "selu", "celu", "gelu", "silu", "mish", "hardswish",
            "hardsigmoid", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "logsigmoid", "softplus",
            "softsign", "tanhshrink", "threshold", "hardshrink", "softshrink", "rrelu", "sigmoid", "tanh",
            "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"]

_SIZE_PRODUCTS = {operator.mul, operator.imul}


def _operands(ctx: RuleContext) -> list:
    return list(ctx.args) + list(ctx.kwargs.values())


def elementwise(ctx: RuleContext):
    """Every tensor operand broadcasts against the others (a per-channel bound of ``clamp``,
    the condition of ``where``, the second operand of ``add_``). Arithmetic on sizes gives a
    size; a size used as a value on a tensor freezes the channels it counts."""
    operands = _operands(ctx)
    tensors = [v for v in operands if isinstance(v, TensorValue)]
    if not tensors:
        if ctx.node.target is operator.add and all(isinstance(v, (tuple, list)) for v in ctx.args):
            return tuple(item for v in ctx.args for item in v)  # x.shape[:2] + (-1,)
        if any(isinstance(v, SizeValue) for v in operands):
            return SizeValue.combine(operands, ctx.node.target in _SIZE_PRODUCTS)
        if ctx.node.target in _OPERATORS and all(_is_literal(v) for v in operands):
            return ctx.node.target(*ctx.args, **ctx.kwargs)  # (1,) * (x.ndim - 1): literals stay literals
        return ctx.fixed_output()
    ctx.freeze_sizes("used as a value")
    if not isinstance(ctx.out_shape, tuple):
        return ctx.opaque("an elementwise op without a tensor result")
    return broadcast(ctx, tensors)


def _is_literal(value: Any) -> bool:
    """A number or a tuple of numbers that no tensor's size went into."""
    if isinstance(value, (tuple, list)):
        return all(_is_literal(v) for v in value)
    return isinstance(value, (int, float, bool))


def unary(ctx: RuleContext):
    """An op on one tensor; any other tensor argument (a tensor bound, a fill value) broadcasts
    against it as in :func:`elementwise`."""
    x = ctx.arg(0, "input")
    if not isinstance(x, TensorValue) or sum(isinstance(v, TensorValue) for v in _operands(ctx)) > 1:
        return elementwise(ctx)
    return keep_dims(ctx, x)


def metadata_cast(ctx: RuleContext):
    """``to``/``type_as``: another tensor argument gives a dtype or device, nothing else."""
    return keep_dims(ctx, ctx.arg(0, "input"))


_OPERATORS = [operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
              operator.pow, operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.neg,
              operator.pos, operator.abs, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
              operator.ge, operator.and_, operator.or_, operator.invert]
function_rule(*_OPERATORS, *(getattr(torch, n) for n in _BINARY if hasattr(torch, n)), reads_sizes=True)(elementwise)
function_rule(*(getattr(torch, n) for n in _UNARY if hasattr(torch, n)),
              *(getattr(F, n) for n in _F_UNARY if hasattr(F, n)))(unary)
method_rule(*_BINARY, *(n + "_" for n in _BINARY), "expand_as", reads_sizes=True)(elementwise)
method_rule(*_UNARY, *_UNARY_METHODS_ONLY)(unary)
method_rule(*_METADATA_METHODS)(metadata_cast)


# -- shape and layout --------------------------------------------------------------------------
def _reshape_with_sizes(ctx: RuleContext):
    """``view``/``reshape``: sizes as separate arguments or as one list or tuple."""
    if "shape" in ctx.kwargs:
        given, raw = [ctx.kwargs["shape"]], [ctx.node.kwargs["shape"]]
    else:
        given, raw = list(ctx.args[1:]), list(ctx.node.args[1:])
    # one computed tuple (``x.view(y.shape)``) cannot be rewritten size by size
    one_tuple = len(raw) == 1 and isinstance(raw[0], fx.Node) and isinstance(given[0], (tuple, list))
    if len(given) == 1 and not isinstance(given[0], (tuple, list, int, SizeValue)):
        return ctx.opaque("reshape to sizes of unknown origin")
    return reshape_value(ctx, ctx.arg(0, "input"), flat_sizes(given), literals_follow=True,
                         rewritable=not one_tuple)


method_rule("view", "reshape", reads_sizes=True)(_reshape_with_sizes)
function_rule(torch.reshape, reads_sizes=True)(_reshape_with_sizes)


@function_rule(torch.flatten, torch.squeeze, torch.unsqueeze)
@method_rule("flatten", "squeeze", "unsqueeze")
def computed_reshape(ctx: RuleContext):
    return reshape_value(ctx, ctx.arg(0, "input"))


@method_rule("view_as", "reshape_as")
def reshape_as(ctx: RuleContext):
    """The sizes come from the other tensor at run time: its dims must shrink as ours do."""
    x, other = ctx.arg(0, "input"), ctx.arg(1, "other")
    value = reshape_value(ctx, x)
    if not isinstance(other, TensorValue):
        return value
    dims = list(value.dims)
    for d, (mine, theirs) in enumerate(zip(value.dims, other.dims)):
        if mine is not None and theirs is not None:
            ctx.spaces.merge(mine, theirs, ctx.where)
        elif mine is not None or theirs is not None:
            reason = f"reshaped to the sizes of a tensor whose channels shrink otherwise at {ctx.where}"
            ctx.spaces.freeze(mine, reason)
            ctx.spaces.freeze(theirs, reason)
            dims[d] = None
    return TensorValue(value.shape, tuple(dims))


@function_rule(torch.unflatten, reads_sizes=True)
@method_rule("unflatten", reads_sizes=True)
def unflatten(ctx: RuleContext):
    x = ctx.arg(0, "input")
    dim = ctx.arg(1, "dim") % len(x.shape)
    sizes = ctx.arg(2, "sizes")
    if not isinstance(sizes, (list, tuple)) or not isinstance(ctx.raw_arg(2, "sizes"), (list, tuple)):
        return ctx.opaque("unflatten to sizes of unknown origin")
    requested = [-1] * dim + list(sizes) + [-1] * (len(ctx.out_shape) - dim - len(sizes))
    return reshape_value(ctx, x, requested, rewritable=False)


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


@method_rule("expand", "broadcast_to", reads_sizes=True)
@function_rule(torch.broadcast_to, reads_sizes=True)
def expand(ctx: RuleContext):
    """A kept dim keeps its channels when its size is -1 or read from a dim that shrinks with
    it; a broadcast dim sized by one channel count read from a tensor shrinks with that count."""
    x = ctx.arg(0, "input")
    sizes = flat_sizes(list(ctx.args[1:])) if ctx.node.op == "call_method" else flat_sizes([ctx.arg(1, "size")])
    out = ctx.out_shape
    lead = len(out) - len(x.shape)
    if len(sizes) != len(out):
        return ctx.opaque("expand to sizes of unknown origin")
    reason = f"expanded to a size that does not follow its channels at {ctx.where}"
    dims: list[Any] = []
    for d, size in enumerate(sizes):
        layout = x.dims[d - lead] if d >= lead else None
        kept = d >= lead and x.shape[d - lead] == out[d]
        read = _single_read(size)
        if kept and (isinstance(size, int) and size == -1 or out[d] == 1):
            dims.append(layout)
        elif kept and read is not False and (layout is None) == (read is None):
            if layout is not None:
                ctx.spaces.merge(layout, read, ctx.where)
            dims.append(layout)
        elif not kept and d >= lead and read:
            dims.append(read)  # broadcast to the active count of the channels read
        else:
            ctx.spaces.freeze(layout, reason)
            for counted in (size.layouts if isinstance(size, SizeValue) else ()):
                ctx.spaces.freeze(counted, reason)
            dims.append(None)
    return TensorValue(out, tuple(dims))


def _single_read(size: Any) -> Any:
    """For a size that is exactly one dim's size: that dim's layout (None: a dim without
    channels). False for anything else (a literal, arithmetic)."""
    if isinstance(size, SizeValue) and size.factors is not None and len(size.factors) == 1:
        return size.layouts[0] if size.layouts else None
    return False


# -- tensors created from sizes ---------------------------------------------------------------
_CREATED = [torch.zeros, torch.ones, torch.empty, torch.rand, torch.randn, torch.full]


@method_rule("new_empty", "new_zeros", "new_ones", "new_full", reads_sizes=True)
@function_rule(*_CREATED, reads_sizes=True)
def created(ctx: RuleContext):
    """A tensor made from sizes (``x.new_empty((B, 1, 1, 1))`` in timm's drop-path): a dim sized
    by exactly one dim of a tensor carries that dim's channels (at run time the size is the
    active count); a literal size is fixed; a channel count in any other arithmetic freezes."""
    first = 1 if ctx.node.op == "call_method" else 0
    given = ctx.arg(first, "size")
    if isinstance(given, (tuple, list)) or ctx.node.target in ("new_full", torch.full):
        sizes = flat_sizes([given])
    else:
        sizes = flat_sizes(list(ctx.args[first:]))
    out = ctx.out_shape
    if not isinstance(out, tuple) or len(sizes) != len(out):
        return ctx.opaque("a tensor created from sizes of unknown origin")
    dims: list[Any] = []
    for size in sizes:
        read = _single_read(size)
        if read is False and isinstance(size, SizeValue):
            for counted in size.layouts:
                ctx.spaces.freeze(counted, f"a tensor sized by arithmetic on a channel count at {ctx.where}")
        dims.append(read or None)
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


@function_rule(torch.einsum)
def einsum(ctx: RuleContext):
    """``torch.einsum("bhqd,bhkd->bhqk", q, k)``: each letter names one dim. A letter kept in the
    output is elementwise across the operands that have it (their spaces merge, as under
    broadcasting); one summed away in two or more operands contracts them (they shrink together,
    as a matrix product's inner dim); one summed within a single operand is a reduction over its
    channels. Ellipses and repeated letters (diagonals) have no rule."""
    equation, operands = ctx.args[0], list(ctx.args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if not isinstance(equation, str) or "->" not in equation or "." in equation:
        return ctx.opaque("einsum with an ellipsis or without an explicit output")
    inputs, output = equation.replace(" ", "").split("->")
    subscripts = inputs.split(",")
    if (len(subscripts) != len(operands) or not all(isinstance(x, TensorValue) for x in operands)
            or any(len(letters) != len(x.shape) or len(set(letters)) != len(letters)
                   for letters, x in zip(subscripts, operands))
            or not isinstance(ctx.out_shape, tuple) or len(output) != len(ctx.out_shape)):
        return ctx.opaque("einsum with repeated letters or unknown operands")
    by_letter: dict[str, list[TensorValue]] = {}
    for letters, x in zip(subscripts, operands):
        for letter, size, layout in zip(letters, x.shape, x.dims):
            by_letter.setdefault(letter, []).append(TensorValue((size,), (layout,)))
    for letter, dims in by_letter.items():
        if letter in output:
            continue
        if len(dims) == 1:
            ctx.spaces.freeze(dims[0].dims[0], f"reduction over channels at {ctx.where}")
        for other in dims[1:]:
            _contract(ctx, dims[0].dims[0], other.dims[0])
    kept = tuple(broadcast(ctx, by_letter[letter], (size,)).dims[0] for letter, size in zip(output, ctx.out_shape))
    return TensorValue(ctx.out_shape, kept)


@function_rule(F.linear)
def linear_function(ctx: RuleContext):
    """``F.linear(x, weight, bias)`` with a weight read outside its layer (Swin V2's qkv with a
    bias concatenated from q, k and v parts): x's features contract with the weight's columns,
    the output features are its rows, the bias follows them."""
    x, weight, bias = ctx.arg(0, "input"), ctx.arg(1, "weight"), ctx.arg(2, "bias")
    if not isinstance(x, TensorValue) or not isinstance(weight, TensorValue) or len(weight.shape) != 2:
        return ctx.opaque("linear with an unusual weight")
    _contract(ctx, x.dims[-1], weight.dims[1])
    if isinstance(bias, TensorValue):
        _contract(ctx, weight.dims[0], bias.dims[0])
    return TensorValue(ctx.out_shape, x.dims[:-1] + (weight.dims[0],))


@function_rule(F.scaled_dot_product_attention)
def attention(ctx: RuleContext):
    """``softmax(q k^T * scale) v`` over (..., length, features): batch dims (heads) broadcast,
    q and k features contract, queries are independent rows. The softmax runs over the keys, so
    a channel space along the key length (tokens made channels by a token-mixing layer) freezes:
    an inactive key still takes its share of every query's attention."""
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    mask = ctx.arg(3, "attn_mask")
    out = ctx.out_shape
    if not all(isinstance(t, TensorValue) and len(t.shape) >= 2 for t in (q, k, v)):
        return ctx.opaque("attention without (..., length, features) operands")
    _contract(ctx, q.dims[-1], k.dims[-1])
    if q.dims[-1] is not None and ctx.kwargs.get("scale") is None:
        ctx.spaces.freeze(q.dims[-1], f"the attention scale depends on the feature count at {ctx.where}")
    for layout in (k.dims[-2], v.dims[-2]):
        ctx.spaces.freeze(layout, f"softmax over the keys at {ctx.where}")
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
    return mix_along(ctx, x, dim, name)


# -- spatial -----------------------------------------------------------------------------------
def _spatial(n: int):
    def pooling(ctx: RuleContext):
        return spatial_op(ctx, ctx.arg(0, "input"), n)
    return pooling


for _n, _fns in {1: ["avg_pool1d", "max_pool1d", "adaptive_avg_pool1d", "adaptive_max_pool1d", "lp_pool1d"],
                 2: ["avg_pool2d", "max_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "lp_pool2d"],
                 3: ["avg_pool3d", "max_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d"]}.items():
    function_rule(*(getattr(F, f) for f in _fns if hasattr(F, f)),
                  *(getattr(torch, f) for f in _fns if hasattr(torch, f)))(_spatial(_n))


@function_rule(F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear)
def interpolate(ctx: RuleContext):
    x = ctx.arg(0, "input")
    return spatial_op(ctx, x, len(x.shape) - 2)


@function_rule(F.pad, reads_sizes=True)
def pad(ctx: RuleContext):
    """Pads the last ``len(pad) // 2`` dims, the last dim first. A dim padded by a literal 0 on
    both sides keeps its channels (Swin pads a channels-last map as ``(0, 0, 0, pad_w, 0,
    pad_h)``); amounts computed from spatial sizes stay right at every width, amounts counting
    channels do not."""
    x = ctx.arg(0, "input")
    widths = ctx.arg(1, "pad")
    if not isinstance(widths, (list, tuple)) or any(not isinstance(w, (int, SizeValue)) for w in widths):
        return ctx.opaque("padding by amounts of unknown origin")
    ctx.freeze_sizes("pads by it")
    padded = [-1 - k for k in range(len(widths) // 2) if widths[2 * k] != 0 or widths[2 * k + 1] != 0]
    return _along(ctx, x, padded, "padding")


@function_rule(torch.roll)
@method_rule("roll")
def roll(ctx: RuleContext):
    """A cyclic shift along the given dims (Swin's shifted windows): the other dims keep their
    channels; without dims it shifts the flattened tensor."""
    x = ctx.arg(0, "input")
    dims = ctx.arg(2, "dims")
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        return ctx.opaque("roll of the flattened tensor")
    return _along(ctx, x, (dims,) if isinstance(dims, int) else dims, "roll")


def _along(ctx: RuleContext, x: TensorValue, dims: Any, what: str) -> TensorValue:
    """An op that moves or repeats values along ``dims`` only: their channels stay whole, the
    other dims keep theirs."""
    out = list(x.dims)
    for d in {d % len(out) for d in dims}:
        ctx.spaces.freeze(out[d], f"{what} over channels at {ctx.where}")
        out[d] = None
    return TensorValue(ctx.out_shape, tuple(out))


@function_rule(torch.repeat_interleave)
@method_rule("repeat_interleave")
def repeat_interleave(ctx: RuleContext):
    """Each slice along one dim repeated (GCViT's global query, repeated for every window of
    its image along the batch): the other dims keep their channels; without a dim it repeats
    the flattened tensor."""
    x, repeats, dim = ctx.arg(0, "input"), ctx.arg(1, "repeats"), ctx.arg(2, "dim")
    if not isinstance(x, TensorValue) or dim is None:
        return ctx.opaque("repeat_interleave of the flattened tensor")
    if isinstance(repeats, TensorValue):  # counts per slice: the slices it counts stay whole
        for layout in repeats.dims:
            ctx.spaces.freeze(layout, f"repeat_interleave counts at {ctx.where}")
    return _along(ctx, x, (dim,), "repeat_interleave")


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


@function_rule(torch.split, torch.chunk, torch.tensor_split, reads_sizes=True)
@method_rule("split", "chunk", "tensor_split", reads_sizes=True)
def split_rule(ctx: RuleContext):
    """On a channel dim the run-time op cuts at the pieces' active sizes, whatever the sizes
    given; elsewhere the given sizes stay, so they must not count channels."""
    x = ctx.arg(0, "input")
    if not isinstance(ctx.out_shape, (list, tuple)):
        return ctx.opaque("split")
    dim = ctx.arg(2, "dim", 0)
    if x.dims[dim % len(x.shape)] is None:
        ctx.freeze_sizes("splits a dim without channels")
    return split(ctx, x, dim)


@function_rule(torch.unbind)
@method_rule("unbind")
def unbind(ctx: RuleContext):
    x = ctx.arg(0, "input")
    dim = ctx.arg(1, "dim", 0) % len(x.shape)
    ctx.spaces.freeze(x.dims[dim], f"unbind over channels at {ctx.where}")
    dims = x.dims[:dim] + x.dims[dim + 1:]
    return type(ctx.out_shape)(TensorValue(s, dims) for s in ctx.out_shape)


@function_rule(operator.getitem, reads_sizes=True)
def getitem(ctx: RuleContext):
    container, item = ctx.args[0], ctx.raw_arg(1, "item")
    if isinstance(container, TensorValue):
        ctx.freeze_sizes("indexes with it")
        return index(ctx, container, item, ctx.args[1])
    if isinstance(container, (list, tuple)) and isinstance(item, (int, slice)):
        return container[item]
    return fixed_value(ctx.out_shape)


@function_rule(operator.setitem)
def setitem(ctx: RuleContext):
    target = ctx.args[0]
    if not isinstance(target, TensorValue):
        return ctx.opaque("item assignment into a value that is not a tensor")
    return assign(ctx, target, ctx.raw_arg(1, "key"), ctx.args[1], ctx.args[2])


# -- values that are not tensors ---------------------------------------------------------------
def _dim_sizes(ctx: RuleContext, x: TensorValue) -> tuple[SizeValue, ...]:
    return tuple(SizeValue.read(ctx.node.args[0], d, layout) for d, layout in enumerate(x.dims))


@method_rule("size")
def size(ctx: RuleContext):
    """``x.size()`` and ``x.size(d)``: sizes that remember which dims they read."""
    x, dim = ctx.arg(0, "input"), ctx.arg(1, "dim")
    if not isinstance(x, TensorValue):
        return None
    sizes = _dim_sizes(ctx, x)
    return sizes if dim is None else sizes[dim] if isinstance(dim, int) else None


@method_rule("numel", "nelement")
@function_rule(torch.numel)
def numel(ctx: RuleContext):
    x = ctx.arg(0, "input")
    return SizeValue.combine(list(_dim_sizes(ctx, x)), True) if isinstance(x, TensorValue) else None


@function_rule(builtins.len)
def length(ctx: RuleContext):
    x = ctx.arg(0, "obj")
    return _dim_sizes(ctx, x)[0] if isinstance(x, TensorValue) else None


@function_rule(builtins.int, builtins.float, reads_sizes=True)
def number(ctx: RuleContext):
    value = ctx.arg(0, "x")
    return value if isinstance(value, SizeValue) else None


@method_rule("element_size", "get_device", "is_contiguous", "stride")
def no_tensor(ctx: RuleContext):
    return None


@method_rule("dim", "ndimension")
def dimensions(ctx: RuleContext):
    """The number of dims, a literal: tracing fixed it."""
    x = ctx.arg(0, "input")
    return len(x.shape) if isinstance(x, TensorValue) else None


@function_rule(torch._assert, reads_sizes=True)
def assertion(ctx: RuleContext):
    return None  # a check computes nothing


@function_rule(_enter_autocast, _exit_autocast)
def autocast_region(ctx: RuleContext):
    """Entering or leaving a mixed-precision region: it computes nothing on tensors."""
    return None


@function_rule(shape_guard)
def guard(ctx: RuleContext):
    """A number tracing fixed (a branch on sizes): it computes nothing, but a channel count in it
    would be fixed at its traced value, so the channels it counts stay whole (the registry
    freezes them: this rule does not read sizes)."""
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
    if isinstance(x, TensorValue) and name == "shape":
        return _dim_sizes(ctx, x)
    if isinstance(x, TensorValue) and name == "ndim":
        return len(x.shape)
    if isinstance(x, TensorValue) and name in ("data", "real", "imag"):  # its values, position by position
        return keep_dims(ctx, x)
    out = fixed_value(ctx.out_shape) if name not in ("dtype", "device", "ndim", "is_cuda") else None
    if isinstance(x, TensorValue) and isinstance(out, TensorValue):
        return ctx.opaque(f"tensor attribute .{name} with no channel rule")
    return out
