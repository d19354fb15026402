"""How tensor operations move channel layouts: the shared logic behind function, method and
module rules (broadcasting, reshapes, permutations, reductions, concatenation, splitting,
indexing)."""

from __future__ import annotations

import math
from typing import Any

from torch import fx

from .rules import RuleContext, SizeValue, TensorValue
from .spaces import SpaceLayout

MAX_REPEATS = 64  # a merge reshape repeats a layout once per outer index; beyond this, freeze


def keep_dims(ctx: RuleContext, x: TensorValue) -> TensorValue:
    """An op whose output has the input's shape and mixes nothing across channels."""
    out = ctx.out_shape
    if not isinstance(out, tuple) or len(out) != len(x.shape):
        return ctx.opaque("an elementwise op changed the rank")
    dims = []
    for d, layout in enumerate(x.dims):
        if out[d] != x.shape[d]:
            ctx.spaces.freeze(layout, f"size change at {ctx.where}")
            layout = None
        dims.append(layout)
    return TensorValue(out, tuple(dims))


def spatial_op(ctx: RuleContext, x: TensorValue, spatial: int) -> TensorValue:
    """Pooling, interpolation, padding: the last ``spatial`` dims change, the others are kept."""
    out = ctx.out_shape
    if len(out) != len(x.shape):
        return ctx.opaque("a spatial op changed the rank")
    dims = []
    for d, layout in enumerate(x.dims):
        if d >= len(out) - spatial or out[d] != x.shape[d]:
            ctx.spaces.freeze(layout, f"spatial op over a channel dimension at {ctx.where}")
            layout = None
        dims.append(layout)
    return TensorValue(out, tuple(dims))


def mix_along(ctx: RuleContext, x: TensorValue, dim: int, what: str) -> TensorValue:
    """An op that mixes values along one dim (softmax): that dim's channels stay whole, the other
    dims keep theirs."""
    if ctx.out_shape != x.shape:
        return ctx.opaque(what)
    n = len(x.shape)
    ctx.spaces.freeze(x.dims[dim % n], f"{what} over channels at {ctx.where}")
    dims = list(x.dims)
    dims[dim % n] = None
    return TensorValue(ctx.out_shape, tuple(dims))


def broadcast(ctx: RuleContext, operands: list[TensorValue], out: tuple[int, ...] | None = None) -> TensorValue:
    """Elementwise op over broadcast operands: the operands' spaces on each dim are merged; a
    space meeting a fixed dimension of the same size freezes."""
    out = ctx.out_shape if out is None else out
    dims: list[Any] = []
    for d in range(len(out)):
        layouts, fixed = [], False
        for x in operands:
            od = d - (len(out) - len(x.shape))
            if od < 0 or (x.shape[od] == 1 and out[d] != 1):
                continue
            if x.dims[od] is None:
                fixed = fixed or out[d] > 1
            else:
                layouts.append(x.dims[od])
        if not layouts or out[d] <= 1:
            dims.append(None)
            continue
        if fixed:
            for layout in layouts:
                ctx.spaces.freeze(layout, f"combined with fixed channels at {ctx.where}")
            dims.append(None)
            continue
        for other in layouts[1:]:
            ctx.spaces.merge(layouts[0], other, ctx.where)
        dims.append(layouts[0])
    return TensorValue(out, tuple(dims))


def permute(ctx: RuleContext, x: TensorValue, order: list[int]) -> TensorValue:
    n = len(x.shape)
    order = [d % n for d in order]
    return TensorValue(ctx.out_shape, tuple(x.dims[d] for d in order))


def reduce(ctx: RuleContext, x: TensorValue, dims: Any, keepdim: bool) -> TensorValue:
    n = len(x.shape)
    if dims is None or dims == []:
        reduced = set(range(n))
    else:
        reduced = {d % n for d in ((dims,) if isinstance(dims, int) else dims)}
    out: list[Any] = []
    for d in range(n):
        if d in reduced:
            ctx.spaces.freeze(x.dims[d], f"reduction over channels at {ctx.where}")
            if keepdim:
                out.append(None)
        else:
            out.append(x.dims[d])
    shape = ctx.out_shape
    if not isinstance(shape, tuple) or len(shape) != len(out):
        return ctx.opaque("reduction with an unexpected result")
    return TensorValue(shape, tuple(out))


def scale_layout(layout: SpaceLayout, factor: int) -> SpaceLayout:
    return tuple((node, inner * factor) for node, inner in layout)


def _reshape_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of non-unit dims of ``a`` and ``b`` whose products agree."""
    ai = [d for d in range(len(a)) if a[d] != 1]
    bi = [d for d in range(len(b)) if b[d] != 1]
    groups, i, j = [], 0, 0
    while i < len(ai) and j < len(bi):
        gi, gj = [ai[i]], [bi[j]]
        pa, pb = a[ai[i]], b[bi[j]]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                if i == len(ai):
                    return None
                gi.append(ai[i])
                pa *= a[ai[i]]
                i += 1
            else:
                if j == len(bi):
                    return None
                gj.append(bi[j])
                pb *= b[bi[j]]
                j += 1
        groups.append((gi, gj))
    return groups if i == len(ai) and j == len(bi) else None


def reshape_value(ctx: RuleContext, x: TensorValue, sizes: list[Any] | None = None, *,
                  literals_follow: bool = False, rewritable: bool = True) -> TensorValue:
    """view/reshape/flatten/unflatten/squeeze/unsqueeze, by the shapes before and after.

    ``sizes``: what the code asked for, per output dim: an int literal, -1, or a
    :class:`SizeValue` computed at run time (None when torch computes every size itself, as
    for ``flatten``). What each becomes at a reduced width follows from where it came from:

    - exactly the product of the input dims that merge into this one (``x.reshape(B * C, -1)``
      with ``B, C`` read from ``x``): right at any width and batch, left alone;
    - a literal landing on channels (a head count, ``self.dim``) follows the width when
      ``literals_follow`` (the rewrite replaces it by the active size) and freezes otherwise;
    - computed from channel counts only (``C``, ``C // num_heads``): the active size of the
      channels landing there, or its traced value where the dim stays fixed (the head dim);
    - computed from no channel count but landing on channels (``B * num_heads``: the batch is
      in it): scaled by the width, so that it holds at every batch size;
    - one channel count times sizes without channels (``B * C * n``), landing on a dim that
      holds those channels and fixed positions only: right at every width as computed;
    - computed from channel counts and other sizes otherwise: nothing proves what it means at
      a reduced width, so those channels stay whole.

    ``rewritable``: the sizes are separate arguments the rewrite can replace one by one (not one
    computed tuple)."""
    out_shape = ctx.out_shape
    groups = _reshape_groups(x.shape, out_shape)
    if groups is None:
        return ctx.opaque("reshape")
    out: list[Any] = [None] * len(out_shape)
    merged_from: dict[int, list[int]] = {}
    for ins, outs in groups:
        if len(outs) == 1:
            merged_from[outs[0]] = ins
        carrying = [d for d in ins if x.dims[d] is not None]
        if not carrying:
            continue
        placed = _place(ctx, x, ins, outs, carrying)
        if placed is None and any(ctx.spaces.is_frozen(x.dims[d]) for d in carrying):
            placed = _place_around_frozen(ctx, x, ins, outs, carrying)
        if placed is None:
            for d in carrying:
                ctx.spaces.freeze(x.dims[d], f"reshape across channels at {ctx.where}")
            continue
        for d, layout in placed.items():
            out[d] = layout
    following: dict[int, SpaceLayout] = {}
    constants: dict[int, int] = {}
    scaled: set[int] = set()
    for d, layout in enumerate(out):
        size = sizes[d] if sizes is not None and d < len(sizes) else -1
        if isinstance(size, bool) or size == -1:
            continue
        if isinstance(size, int):
            if layout is None:
                continue
            if literals_follow:
                following[d] = layout
            else:
                ctx.spaces.freeze(layout, f"channel count written as a constant ({size}) at {ctx.where}")
                out[d] = None
            continue
        value = size if isinstance(size, SizeValue) else SizeValue()  # of unknown origin: read no channels
        if _product_of_merged_dims(value, ctx.node.args[0], x, merged_from.get(d)):
            continue
        if not value.layouts:
            if layout is not None:
                following[d] = layout
                scaled.add(d)
        elif not value.reads_fixed:
            if layout is not None:
                following[d] = layout
            else:
                constants[d] = out_shape[d]
        elif value.channel is not None and layout is not None and _same_units(ctx, value.channel, layout,
                                                                               out_shape[d]):
            continue  # one channel count times sizes without channels: right at every width as computed
        else:
            reason = f"a size computed from channel counts and other sizes at {ctx.where}"
            for read in value.layouts:
                ctx.spaces.freeze(read, reason)
            ctx.spaces.freeze(layout, reason)
            out[d] = None
    if (following or constants) and not rewritable:
        reason = f"sizes that would have to follow the width, given as one computed tuple at {ctx.where}"
        for d in list(following) + list(constants):
            ctx.spaces.freeze(out[d], reason)
            out[d] = None
        for read in (r for v in (sizes or ()) if isinstance(v, SizeValue) for r in v.layouts):
            ctx.spaces.freeze(read, reason)
    elif following or constants:
        ctx.analysis.dynamic(ctx.node, "sizes", dims=following, constants=constants, scaled=frozenset(scaled))
    return TensorValue(out_shape, tuple(out))


def _place_around_frozen(ctx: RuleContext, x: TensorValue, ins: list[int], outs: list[int], carrying: list[int]):
    """The placement with frozen spaces as fixed sizes: they are whole at every width, so a
    reshape that merges one with a slimmable dim (MViT's pooled heads times the head dim, whose
    depthwise pooling froze it) moves only the slimmable one."""
    fixed = TensorValue(x.shape, tuple(None if layout is not None and ctx.spaces.is_frozen(layout) else layout
                                       for layout in x.dims))
    live = [d for d in carrying if fixed.dims[d] is not None]
    return _place(ctx, fixed, ins, outs, live) if live else {}


def _product_of_merged_dims(value: SizeValue, source: Any, x: TensorValue, merged: list[int] | None) -> bool:
    """True when ``value`` is exactly the product of the sizes of ``x``'s dims that merge into
    this output dim (read from ``x`` itself): torch then computes it right at any width."""
    if value.factors is None or merged is None:
        return False
    n = len(x.shape)
    dims = []
    for node, dim in value.factors:
        if node is not source or not isinstance(dim, int) or not -n <= dim < n:
            return False
        if x.shape[dim % n] != 1:
            dims.append(dim % n)
    return sorted(dims) == sorted(merged)


def _place(ctx: RuleContext, x: TensorValue, ins: list[int], outs: list[int], carrying: list[int]):
    shape, out_shape = x.shape, ctx.out_shape
    if len(ins) == 1 and len(outs) == 1:
        return {outs[0]: x.dims[ins[0]]}
    placed = _place_whole_channels(ctx, x, ins, outs)
    if placed is not None:
        return placed
    if len(ins) == 1 and ins[0] == len(shape) - 1 and len(outs) >= 2:
        return _split_heads(ctx, x.dims[ins[0]], [out_shape[d] for d in outs], outs)
    if len(ins) == 1 and len(outs) == 2:  # split one carrying dim in two
        layout = x.dims[ins[0]]
        outer_size, inner_size = out_shape[outs[0]], out_shape[outs[1]]
        expanded = ctx.spaces.expand(layout)
        if all(inner % inner_size == 0 for _, inner in expanded):
            return {outs[0]: tuple((node, inner // inner_size) for node, inner in expanded)}
        pieces = ctx.spaces.split(layout, [inner_size] * outer_size, ctx.where)
        if pieces is None:
            return None
        for piece in pieces[1:]:
            ctx.spaces.merge(pieces[0], piece, ctx.where)
        return {outs[1]: pieces[0]}
    return None


def _factors(ctx: RuleContext, layout: SpaceLayout | None, size: int) -> list[tuple[int, SpaceLayout | None]]:
    """A dim as factors, most significant first: ``(n, None)`` for n fixed positions, ``(n, base)``
    for the n units of a channel layout. A merged dim is ``repeats x base x inner`` (a flatten
    of ``(B, C, H)`` is ``B x C x H``)."""
    if layout is None:
        return [(size, None)]
    expanded = ctx.spaces.expand(layout)
    period = next(p for p in range(1, len(expanded) + 1)
                  if len(expanded) % p == 0 and expanded[:p] * (len(expanded) // p) == expanded)
    base, repeats = expanded[:period], len(expanded) // period
    inner = math.gcd(*(i for _, i in base))
    units = tuple((node, i // inner) for node, i in base)
    return [(repeats, None), (size // repeats // inner, units), (inner, None)]


def _same_units(ctx: RuleContext, read: SpaceLayout, layout: SpaceLayout, size: int) -> bool:
    """Whether ``layout`` (of ``size`` elements) holds the channel units of ``read`` and fixed
    positions only."""
    return _factors(ctx, read, ctx.spaces.size_of(read))[1][1] == _factors(ctx, layout, size)[1][1]


def _place_whole_channels(ctx: RuleContext, x: TensorValue, ins: list[int], outs: list[int]):
    """A reshape that moves whole channel layouts between dims without cutting one: each output
    dim takes consecutive factors of the input (fixed positions may be cut anywhere), and
    carries the one channel layout among them, if any, repeated by the fixed factors before it
    and spread over those after it. MobileViT's unfold (``(B, C, H, W)`` to ``(B * C * H / p,
    p, ...)`` and back) folds its channels into a dim with the batch this way. None when a
    channel layout would be cut or two would share a dim."""
    factors: list[list[Any]] = []
    for d in ins:
        for n, base in _factors(ctx, x.dims[d], x.shape[d]):
            if n == 1 and base is None:
                continue
            if base is None and factors and factors[-1][1] is None:
                factors[-1][0] *= n  # adjacent fixed positions are one factor
            else:
                factors.append([n, base])
    placed: dict[int, Any] = {}
    for d in outs:
        need, outer, inner, base = ctx.out_shape[d], 1, 1, None
        while need > 1:
            if not factors:
                return None
            n, layout = factors[0]
            if layout is not None:
                if base is not None or need % n:
                    return None
                base, need = layout, need // n
                factors.pop(0)
                continue
            take = math.gcd(n, need)
            if take == 1:
                return None
            if base is None:
                outer *= take
            else:
                inner *= take
            need //= take
            if take == n:
                factors.pop(0)
            else:
                factors[0][0] = n // take
        if base is not None:
            if outer > MAX_REPEATS:
                return None
            placed[d] = scale_layout(base, inner) * outer
    return placed if not factors else None


def _split_heads(ctx: RuleContext, layout: SpaceLayout, sizes: list[int], outs: list[int]):
    """A channels-last dim split as attention splits it, ``[copies...,] heads, head_dim`` (q, k
    and v fused, or one of them): the copies share one head space, which shrinks by whole
    heads; the head dim is fixed (the attention scale depends on it)."""
    *lead, heads, head_dim = sizes
    copies = math.prod(lead)
    pieces = ctx.spaces.split(layout, [heads * head_dim] * copies, ctx.where) if copies > 1 else [layout]
    if pieces is None:
        return None
    for piece in pieces[1:]:
        if not ctx.spaces.merge(pieces[0], piece, ctx.where):
            return None
    head_layout = ctx.new_layout("heads", heads)
    if not ctx.spaces.merge(pieces[0], scale_layout(head_layout, head_dim), ctx.where):
        return None
    return {outs[-2]: head_layout}


def flat_sizes(sizes: list[Any]) -> list[Any]:
    """The sizes of ``view(a, b)`` or ``view((a, b))`` as one list."""
    return list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)) else list(sizes)


def concatenate(ctx: RuleContext, tensors: list[TensorValue], dim: int) -> TensorValue:
    n = len(ctx.out_shape)
    dim %= n
    segments: list = []
    for k, x in enumerate(tensors):
        layout = x.dims[dim]
        if layout is None:
            layout = ctx.spaces.layout(f"{ctx.node.name}:fixed{k}", x.shape[dim], "fixed channels")
        segments.extend(layout)
    others = [TensorValue(x.shape[:dim] + (1,) + x.shape[dim + 1:], x.dims) for x in tensors]
    merged = broadcast(ctx, others, ctx.out_shape[:dim] + (1,) + ctx.out_shape[dim + 1:])
    dims = list(merged.dims)
    dims[dim] = tuple(segments) if any(x.dims[dim] is not None for x in tensors) else None
    return TensorValue(ctx.out_shape, tuple(dims))


def split(ctx: RuleContext, x: TensorValue, dim: int) -> Any:
    """split/chunk/tensor_split: the output pieces' sizes come from shape propagation."""
    shapes = ctx.out_shape
    n = len(x.shape)
    dim %= n
    layout = x.dims[dim]
    if layout is None:
        return type(shapes)(TensorValue(s, x.dims) for s in shapes)
    sizes = [s[dim] for s in shapes]
    pieces = ctx.spaces.split(layout, sizes, ctx.where) if len(sizes) > 1 else [layout]
    if pieces is None:
        ctx.spaces.freeze(layout, f"split inside one channel unit at {ctx.where}")
        return type(shapes)(TensorValue(s, x.dims[:dim] + (None,) + x.dims[dim + 1:]) for s in shapes)
    ctx.analysis.dynamic(ctx.node, "split", dim=dim, pieces=pieces)
    return type(shapes)(TensorValue(s, x.dims[:dim] + (p,) + x.dims[dim + 1:]) for s, p in zip(shapes, pieces))


def _key_items(item: Any, value: Any, rank: int) -> tuple[list[Any], list[Any]]:
    """An index key as one item per dim (an ellipsis spelled out as whole slices), as written in
    the graph and as analysis values."""
    items = list(item) if isinstance(item, tuple) else [item]
    values = list(value) if isinstance(value, tuple) else [value]
    if Ellipsis in items:
        at = items.index(Ellipsis)
        fill = rank - (len(items) - 1 - sum(1 for i in items if i is None))
        items = items[:at] + [slice(None)] * fill + items[at + 1:]
        values = values[:at] + [slice(None)] * fill + values[at + 1:]
    return items, values


def _computed_bounds(item: slice) -> bool:
    """A slice whose bounds are computed at run time (``x[:, :H]``), not literals."""
    return any(isinstance(b, fx.Node) for b in (item.start, item.stop, item.step))


def index(ctx: RuleContext, x: TensorValue, item: Any, value: Any) -> Any:
    """``x[item]``. A partial slice of a channel dimension becomes a run-time slice of the active
    channels. Bounds and indices computed at run time (``x[:, :H]``, with ``H`` read from a
    spatial size) are fine on dims without channels. One index tensor (``table[index]``, a
    relative position bias) gathers along a dim without channels; the other dims keep theirs.
    ``item`` is the index as written in the graph, ``value`` the same as analysis values."""
    items, values = _key_items(item, value, len(x.shape))
    gathers = [k for k, v in enumerate(values) if isinstance(v, TensorValue)]
    integers = [k for k, v in enumerate(values) if isinstance(v, (int, SizeValue)) and not isinstance(v, bool)]
    if len(gathers) > 1 or (gathers and integers):
        return ctx.opaque("advanced indexing with several indices")
    computed = any(isinstance(i, fx.Node) or isinstance(i, slice) and _computed_bounds(i) for i in items)
    dims: list[Any] = []
    source = 0
    dynamic = None
    for position, (it, val) in enumerate(zip(items, values)):
        if it is None:
            dims.append(None)
            continue
        if source >= len(x.shape):
            return ctx.opaque("indexing")
        layout, size = x.dims[source], x.shape[source]
        source += 1
        if isinstance(val, TensorValue):
            for index_layout in val.dims:  # the index holds positions: it must stay whole
                ctx.spaces.freeze(index_layout, f"used as an index at {ctx.where}")
            ctx.spaces.freeze(layout, f"channels gathered by an index tensor at {ctx.where}")
            dims.extend((None,) * len(val.shape))
        elif isinstance(val, (int, SizeValue)):
            ctx.spaces.freeze(layout, f"single channel selected at {ctx.where}")
        elif not isinstance(it, slice):
            return ctx.opaque("indexing with a value of unknown kind")
        elif layout is None:
            dims.append(None)
        elif _computed_bounds(it):
            ctx.spaces.freeze(layout, f"channels sliced at computed bounds at {ctx.where}")
            dims.append(None)
        elif (start_stop_step := it.indices(size)) == (0, size, 1):
            dims.append(layout)
        elif start_stop_step[2] != 1 or dynamic is not None or computed or gathers:
            ctx.spaces.freeze(layout, f"strided, repeated or mixed channel slicing at {ctx.where}")
            dims.append(None)
        else:
            start, stop, _ = start_stop_step
            parts = ctx.spaces.split(layout, [start, stop - start, size - stop], ctx.where)
            if parts is None:
                ctx.spaces.freeze(layout, f"slice inside one channel unit at {ctx.where}")
                dims.append(None)
            else:
                before, piece, _ = parts
                dynamic = (position, before, piece)
                dims.append(piece)
    dims.extend(x.dims[source:])
    out = ctx.out_shape
    if not isinstance(out, tuple) or len(out) != len(dims):
        return ctx.opaque("indexing with an unexpected result")  # freezes x, and so every dim taken from it
    if dynamic is not None:
        position, before, piece = dynamic
        ctx.analysis.dynamic(ctx.node, "slice", items=tuple(items), position=position, before=before, piece=piece)
    return TensorValue(out, tuple(dims))


def assign(ctx: RuleContext, x: TensorValue, item: Any, key: Any, value: Any) -> None:
    """``x[item] = value``, in place (MViT adds its relative positions into
    ``attn[:, :, 1:, 1:]``): the value broadcasts into the region as in an elementwise op, so
    the spaces of the dims it fills merge with the value's. Slices with literal bounds and
    integers only; a region that takes part of a channel dim, or one channel of it, freezes
    that dim, since the rest keeps its old values. ``item`` is the key as written in the graph,
    ``key`` the same as analysis values."""
    items, keys = _key_items(item, key, len(x.shape))
    if len(items) > len(x.shape) or any(it is None for it in items):
        return ctx.opaque("item assignment with new axes")
    dims: list[SpaceLayout | None] = []
    shape: list[int] = []
    for it, val, layout, size in zip(items, keys, x.dims, x.shape):
        if isinstance(it, slice) and not _computed_bounds(it):
            if layout is not None and it.indices(size) != (0, size, 1):
                ctx.spaces.freeze(layout, f"channels assigned in part at {ctx.where}")
                layout = None
            dims.append(layout)
            shape.append(len(range(*it.indices(size))))
        elif isinstance(val, int) and not isinstance(val, bool):
            ctx.spaces.freeze(layout, f"single channel assigned at {ctx.where}")
        else:
            return ctx.opaque("item assignment at computed bounds or by an index tensor")
    dims.extend(x.dims[len(items):])
    shape.extend(x.shape[len(items):])
    if isinstance(value, TensorValue):
        broadcast(ctx, [TensorValue(tuple(shape), tuple(dims)), value], tuple(shape))
    return None


def pixel_shuffle(ctx: RuleContext, x: TensorValue, factor: int) -> TensorValue:
    cdim = len(x.shape) - 3
    layout = x.dims[cdim]
    dims = _pixel_dims(ctx, x)
    block = factor * factor
    if layout is not None and not all(inner % block == 0 for _, inner in ctx.spaces.expand(layout)):
        units = scale_layout(ctx.spaces.layout(f"{ctx.node.name}:pixels", x.shape[cdim] // block), block)
        layout = units if ctx.spaces.merge(layout, units, ctx.where) else None
    if layout is not None:
        dims[cdim] = tuple((node, inner // block) for node, inner in ctx.spaces.expand(layout))
    return TensorValue(ctx.out_shape, tuple(dims))


def pixel_unshuffle(ctx: RuleContext, x: TensorValue, factor: int) -> TensorValue:
    cdim = len(x.shape) - 3
    dims = _pixel_dims(ctx, x)
    if x.dims[cdim] is not None:
        dims[cdim] = scale_layout(x.dims[cdim], factor * factor)
    return TensorValue(ctx.out_shape, tuple(dims))


def _pixel_dims(ctx: RuleContext, x: TensorValue) -> list[SpaceLayout | None]:
    """The dims of a pixel (un)shuffle's output before its channel dim is placed: the leading
    dims kept; the two spatial dims interleave with the channels, so a space on either (a map
    whose rows came from a token convolution) stays whole."""
    for layout in x.dims[-2:]:
        ctx.spaces.freeze(layout, f"pixel shuffle over a channel dimension at {ctx.where}")
    return [*x.dims[:-3], None, None, None]
