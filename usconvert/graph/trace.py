"""Symbolic tracing with torch.fx, the way timm and torchvision trace for feature extraction.

Leaves are torch.nn's own modules, timm's registered no-trace modules, and every subclass of a
layer kind the slimmable layers handle (so timm's ``BatchNormAct2d`` or ``Conv2dSame`` are called
as one unit and keep their own forward). Control flow that depends on ``self.training`` is baked
in by tracing, so a model is traced in both modes, as torchvision's ``DualGraphModule`` does.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import functools
import inspect
import io
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.amp.autocast_mode import _enter_autocast, _exit_autocast
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ConversionError, first_line
from ..nn.kinds import SLIMMABLE_LAYER_TYPES
from ..nn.parametrized import refresh_hook_tensors
from .decompose import traceable_forward

try:  # timm is a dependency, but tracing plain torch models must not need it
    from timm.layers import _fx as timm_fx
except ImportError:  # pragma: no cover
    timm_fx = None


def _notrace_modules() -> tuple[type, ...]:
    return tuple(timm_fx.get_notrace_modules()) if timm_fx else ()


def _notrace_functions() -> tuple[Any, ...]:
    return tuple(timm_fx.get_notrace_functions()) if timm_fx else ()


# where torch.fx.wrap registers functions (torchvision's stochastic_depth, Swin's helpers); torch
# keeps no public way to trace into one, so the tracer takes its entry out while it traces
_TORCH_WRAPPED: dict = getattr(torch.fx._symbolic_trace, "_wrapped_fns_to_patch", {})


def _torch_wrap_key(function: Any) -> tuple[int, str]:
    return id(getattr(function, "__globals__", None)), getattr(function, "__name__", "")


def _registered_leaf(function: Any) -> bool:
    return function in _notrace_functions() or _torch_wrap_key(function) in _TORCH_WRAPPED


class SlimTracer(fx.Tracer):
    """Slimmable layers are leaves. So are the modules timm registers as not traceable, but only
    those that really fail to trace: timm registers whole blocks (MobileVitBlock, TinyVitBlock)
    whose forward traces, and a leaf block's channels all freeze; one that fails is taken back
    out of the graph and called as one unit. Functions registered as not traceable (timm's
    ``register_notrace_function``, ``torch.fx.wrap`` in torchvision) are called as one unit,
    except those in ``trace_into``.

    Given an ``example`` input, a number read from sizes has a value: the nodes recorded so far
    are run on the example, as fake tensors (sizes without data), when Python first needs one
    (never for a model that does not ask), so a branch on it (``if H % window:``), or ``int()``,
    ``math.ceil()`` of it, takes the traced value, and a :func:`shape_guard` node in the graph
    checks at run time that the sizes are the same (a channel count read there freezes its
    channels, see the rule of ``shape_guard``). A branch on tensor values still fails."""

    # a buffer read in the forward is a node of the graph, not a tensor of the trace: ConViT calls
    # ``self.rel_indices.expand(B, ...)`` with the batch size, which only a node can take
    proxy_buffer_attributes = True
    # ``torch.ones(B, n)`` with a size read from the input is recorded (see _SIZES_AS_ARGUMENTS)
    pack_size_arguments = True
    # the nodes run on the example with fake tensors (shapes, devices, no data): a number the
    # tracer needs comes from sizes alone, and every value must be kept, since a node recorded
    # later may take any earlier one; real tensors took torchvision's mvit_v2_s past 24 GB
    fake_example = True

    def __init__(self, trace_into: frozenset[Any] = frozenset(), example: torch.Tensor | None = None) -> None:
        super().__init__(autowrap_functions=tuple(f for f in _notrace_functions() if f not in trace_into))
        self._notrace = _notrace_modules()
        self._trace_into = trace_into
        self._fake_mode = FakeTensorMode(allow_non_fake_inputs=True) if self.fake_example else None
        self._example = example if example is None or self._fake_mode is None else self._fake_mode.from_tensor(example)
        self._values: dict[fx.Node, Any] = {}
        self._leaf_ids: set[int] = set()
        self._traced_through: set[int] = set()  # torch.nn modules traced as their products (.decompose)
        self._products: list[fx.Node] = []  # the nodes recorded for them
        self._running = False  # running a node on the example: modules are called as they are

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        unwrapped = {key: _TORCH_WRAPPED.pop(key) for key in map(_torch_wrap_key, self._trace_into)
                     if key in _TORCH_WRAPPED}
        torch.autocast = torch.amp.autocast = functools.partial(_RecordedAutocast, self)  # type: ignore[misc]
        if self.pack_size_arguments:
            for name, function in _SIZES_AS_ARGUMENTS.items():
                setattr(torch, name, _sizes_packed(function))
        try:
            with torch.no_grad():
                graph = super().trace(root, concrete_args)
            for node in reversed(self._products):  # what the caller did not use (attention weights)
                if not node.users:
                    graph.erase_node(node)
            return graph
        finally:
            torch.autocast = torch.amp.autocast = _AUTOCAST  # type: ignore[misc]
            for name, function in _SIZES_AS_ARGUMENTS.items():
                setattr(torch, name, function)
            _TORCH_WRAPPED.update(unwrapped)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, SLIMMABLE_LAYER_TYPES):
            return True
        if id(m) in self._traced_through:
            return False
        if isinstance(m, self._notrace):
            return id(m) in self._leaf_ids
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        if self._running:
            return forward(*args, **kwargs)
        products = traceable_forward(m, args, kwargs, self._dims)
        if products is not None:
            last = self.graph._root.prev
            self._traced_through.add(id(m))
            try:
                return super().call_module(m, products, args, kwargs)
            finally:
                self._traced_through.discard(id(m))
                while last.next is not self.graph._root:
                    last = last.next
                    self._products.append(last)
        if not isinstance(m, self._notrace) or self.is_leaf_module(m, ""):
            return super().call_module(m, forward, args, kwargs)
        last = self.graph._root.prev  # the graph's last node before the attempt
        stack, calls = self.module_stack.copy(), dict(self.num_calls)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            while self.graph._root.prev is not last:  # take the attempt back out, newest first
                self._values.pop(self.graph._root.prev, None)
                self.graph.erase_node(self.graph._root.prev)
            self.module_stack.clear()  # fx pops the entries of the modules it was in only on success
            self.module_stack.update(stack)
            self.num_calls = calls
            self._leaf_ids.add(id(m))
            return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if self._running:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def _dims(self, value: Any) -> int | None:
        """How many dims a traced tensor has in the example (None: not known)."""
        if self._example is None or not isinstance(value, fx.Proxy):
            return None
        self._catch_up()
        traced = self._values.get(value.node, _UNKNOWN)
        return traced.dim() if isinstance(traced, torch.Tensor) else None

    # -- values of the example, node by node ------------------------------------------------
    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _NumberProxy(node, self)

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, name: str | None = None,
                     type_expr: Any = None, proxy_factory_fn: Any = None) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if kind == "get_attr":  # read now: the forward may replace the attribute before it is run
            self._running = True  # reads the attribute itself, not a proxy of it
            try:
                self._values[proxy.node] = self._attribute(target)
            finally:
                self._running = False
        return proxy

    def _catch_up(self) -> None:
        """Run the nodes recorded since the last call on the example, in order."""
        self._running = True
        try:
            with self._fake_mode or contextlib.nullcontext():
                for node in self.graph.nodes:
                    if node not in self._values:
                        try:
                            self._values[node] = self._evaluate(node)
                        except Exception:
                            self._values[node] = _UNKNOWN
        finally:
            self._running = False

    def _evaluate(self, node: fx.Node) -> Any:
        if node.target in (_enter_autocast, _exit_autocast):
            return _UNKNOWN  # never left entered: the example's values are for sizes, which autocast keeps
        if node.op == "placeholder":  # the input is the first node
            return self._example if node is next(iter(self.graph.nodes)) else _UNKNOWN
        if node.op == "get_attr":
            return self._attribute(node.target)
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), self._value)
        if _contains_unknown((args, kwargs)):
            return _UNKNOWN
        if node.op == "call_module":
            return self.root.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    def _value(self, node: fx.Node) -> Any:
        if node in self._values:
            return self._values[node]
        return self._attribute(node.target) if node.op == "get_attr" else _UNKNOWN

    def _attribute(self, target: str) -> Any:
        value: Any = self.root
        for part in target.split("."):
            value = getattr(value, part, _UNKNOWN)
        return value

    def number(self, proxy: fx.Proxy, convert: Any) -> Any:
        """A number read from sizes, as the traced value; guarded at run time."""
        if self._example is not None and _read_from_sizes(proxy.node):
            self._catch_up()
        value = self._values.get(proxy.node, _UNKNOWN)
        if value is _UNKNOWN or not _read_from_sizes(proxy.node):
            raise fx.proxy.TraceError("symbolically traced variables cannot be used as inputs to control flow")
        self.create_proxy("call_function", shape_guard, (proxy, value), {})
        return convert(value)

    def to_bool(self, obj: fx.Proxy) -> bool:
        return self.number(obj, bool)


class _NumberProxy(fx.Proxy):
    """A proxy that gives the traced value of a size where Python needs a number, and records
    item assignment (torchvision's Swin builds its window mask with ``mask[a:b, c:d] = k``)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})

    def __int__(self) -> int:
        return self.tracer.number(self, int)

    def __float__(self) -> float:
        return self.tracer.number(self, float)


_AUTOCAST = torch.amp.autocast

# factories that take their sizes as separate arguments: torch's argument parser reads
# ``torch.ones(B, n)`` as sizes only when ``B`` is a number, so with a size read from the input
# (Gemma 4's ``torch.ones(batch_size, pH * pW)``) it raises before fx sees the call; as one tuple
# the call reaches fx and is recorded as ``torch.ones((B, n))``
_SIZES_AS_ARGUMENTS = {name: getattr(torch, name) for name in ("zeros", "ones", "empty", "rand", "randn")}


def _sizes_packed(factory: Any) -> Any:
    @functools.wraps(factory)
    def call(*sizes: Any, **kwargs: Any) -> Any:
        if len(sizes) > 1 and any(isinstance(size, fx.Proxy) for size in sizes):
            return factory(sizes, **kwargs)
        return factory(*sizes, **kwargs)
    return call


class _RecordedAutocast:
    """``torch.autocast`` while tracing. A ``with`` block is code, not a call, so fx drops it
    from the graph, and a converted network would compute differently under mixed precision;
    one whose device type is a node (timm's EfficientViT: ``x.device.type``) cannot even be
    entered. The region is recorded with the functions torch.export records it with."""

    def __init__(self, tracer: fx.Tracer, device_type: Any, dtype: Any = None, enabled: Any = True,
                 cache_enabled: Any = None) -> None:
        self.tracer = tracer
        self.arguments = (device_type, dtype, enabled, cache_enabled)
        self.entered: fx.Proxy | None = None

    def __enter__(self) -> None:
        self.entered = self.tracer.create_proxy("call_function", _enter_autocast, self.arguments, {})

    def __exit__(self, *exc: Any) -> None:
        self.tracer.create_proxy("call_function", _exit_autocast, (self.entered,), {})


class _Unknown:
    def __repr__(self) -> str:
        return "<unknown>"


_UNKNOWN = _Unknown()


def _contains_unknown(value: Any) -> bool:
    found = []
    fx.node.map_aggregate(value, lambda v: found.append(v) if v is _UNKNOWN else v)
    return bool(found)


_SIZE_READS = {"size", "dim", "numel", "nelement"}
# not dtype: a network is cast after conversion. The device is read (EfficientViT branches on
# ``x.device.type != "meta"``): the guard checks the branch's outcome, which may hold on every
# device, and says so loudly where it does not
_METADATA = {"shape", "ndim", "device"}
_DEVICE_FIELDS = {"type", "index"}
_NUMBER_OPS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
               operator.pow, operator.neg, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
               operator.ge, operator.and_, operator.or_, operator.not_, operator.getitem, builtins.len, builtins.int,
               builtins.float, builtins.min, builtins.max, builtins.abs, builtins.round, builtins.any, builtins.all}


def _read_from_sizes(node: fx.Node) -> bool:
    """True when the node's value comes from tensor sizes (or the device) and literals only,
    not from values."""
    if node.op == "call_method" and node.target in _SIZE_READS:
        return True
    if node.op == "call_function" and node.target is builtins.getattr:
        source = node.args[0]
        return node.args[1] in _METADATA or (node.args[1] in _DEVICE_FIELDS and isinstance(source, fx.Node)
                                             and source.target is builtins.getattr and source.args[1] == "device")
    if node.op == "call_function" and (node.target in _NUMBER_OPS
                                       or getattr(node.target, "__module__", None) == "math"):  # fx records math.ceil
        return all(_read_from_sizes(n) for n in node.all_input_nodes)
    return False


def shape_guard(value: Any, traced: Any) -> None:
    """At run time: a number read from sizes that tracing fixed (a branch taken, an ``int()``)
    must have the value it had then. (Skipped while torch.jit traces, as fvcore's counter does:
    there sizes are values of its graph, and it has no op for the comparison.)"""
    if not torch.jit.is_tracing() and value != traced:
        raise ConversionError(f"the network was converted at another input size or on another device: a size or "
                              f"device the model branches on gives {value} here and gave {traced} when converted; "
                              f"convert it at this input size, on this device")


@dataclass
class TracedModel:
    """The model's graph in train and eval mode (the same object when they agree)."""

    root: nn.Module
    train_graph: fx.Graph
    eval_graph: fx.Graph

    @property
    def graphs(self) -> list[fx.Graph]:
        return [self.train_graph] if self.train_graph is self.eval_graph else [self.train_graph, self.eval_graph]


def trace(model: nn.Module, example: torch.Tensor) -> TracedModel:
    """Trace ``model`` (which is left in eval mode) and annotate every node with shapes."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]  # running the example must not touch them
    run_error: Exception | None = None
    try:  # a module that fills a cache on its first call (ConViT's rel_indices) fills it now, not with
        with torch.no_grad():  # values of the trace
            model.eval()(example)
    except Exception as exc:  # reported by shape propagation, or below if tracing fails on it first
        run_error = exc
    try:
        graphs = _choose_graphs(model, example)
        if _guards_fail(model, graphs, example):
            # a branch taken depends on the batch: trust no size read as a number, and call
            # what needs one as one unit, as before sizes had values
            graphs = _choose_graphs(model, None)
    except Exception as exc:  # fx raises many types; the user needs the cause in one line
        if run_error is not None:  # the model rejects the input size itself (Gemma 4: multiples of 48)
            raise _does_not_run(example, run_error) from exc
        raise ConversionError(f"torch.fx cannot trace {type(model).__name__}: {first_line(exc)}") from exc
    with torch.no_grad():
        for buffer, value in buffers:
            buffer.copy_(value)
    model.eval()
    train_graph, eval_graph = graphs[True], graphs[False]
    if train_graph.python_code("self").src == eval_graph.python_code("self").src:
        eval_graph = train_graph
    traced = TracedModel(model, train_graph, eval_graph)
    for graph in traced.graphs:
        _propagate_shapes(model, graph, example)
    return traced


def _choose_graphs(model: nn.Module, example: torch.Tensor | None) -> dict[bool, fx.Graph]:
    """The graphs in both modes, traced into every registered function that traces. Functions
    registered as not traceable that trace fine (timm's Swin window_reverse, torchvision's
    stochastic_depth), called as one unit, would freeze every channel they touch."""
    graphs = _trace_both_modes(model, frozenset(), example)
    called = {n.target: None for g in graphs.values() for n in g.nodes if n.op == "call_function"}
    trace_into: frozenset[Any] = frozenset()
    for function in [f for f in called if _registered_leaf(f)]:
        try:
            graphs = _trace_both_modes(model, trace_into | {function}, example)
        except Exception:
            continue
        trace_into |= {function}
    return graphs


def _guards_fail(model: nn.Module, graphs: dict[bool, fx.Graph], example: torch.Tensor) -> bool:
    """Whether a size tracing fixed differs at a batch of 1 or one more than traced."""
    if not any(n.target is shape_guard for g in graphs.values() for n in g.nodes):
        return False
    for mode, graph in graphs.items():
        module = fx.GraphModule(model, graph).train(mode)
        for batch in (1, example.shape[0] + 1):
            try:
                with torch.no_grad():
                    module(torch.randn(batch, *example.shape[1:], dtype=example.dtype, device=example.device))
            except ConversionError:
                return True
            except Exception:
                pass  # not a guard: shape propagation reports what the model cannot run
    return False


def _trace_both_modes(model: nn.Module, trace_into: frozenset[Any], example: torch.Tensor | None
                      ) -> dict[bool, fx.Graph]:
    graphs = {}
    for mode in (True, False):
        model.train(mode)
        graphs[mode] = SlimTracer(trace_into, example).trace(model, concrete_args=_optional_arguments(model))
    return graphs


def _optional_arguments(model: nn.Module) -> dict[str, Any]:
    """The forward's arguments after the input that have a default, traced at that default: the
    network is called with one input, and a Hiera's ``mask=None`` must take its ``None`` branch."""
    parameters = list(inspect.signature(model.forward).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in parameters if p.kind in kinds and p.default is not inspect.Parameter.empty}


def _propagate_shapes(model: nn.Module, graph: fx.Graph, example: torch.Tensor) -> None:
    # Eval mode and no_grad: shape propagation must not touch the running statistics.
    gm = fx.GraphModule(model, graph)
    gm.eval()
    with torch.no_grad():
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints the traceback itself
                ShapeProp(gm).propagate(example)
        except Exception as exc:  # ShapeProp wraps the model's own error in one naming the node
            raise _does_not_run(example, exc.__cause__ or exc) from exc


def _does_not_run(example: torch.Tensor, cause: BaseException) -> ConversionError:
    return ConversionError(f"the model does not run on an input of shape {tuple(example.shape)} (a batch of "
                           f"--input-size {','.join(map(str, example.shape[1:]))}): {first_line(cause)}")


def node_shape(node: fx.Node) -> Any:
    """The output shape(s) of a node: a tuple of ints, a nested tuple/list of them, or None."""
    return _shape_of(node.meta.get("tensor_meta"))


def _shape_of(meta: Any) -> Any:
    if meta is None:
        return None
    if hasattr(meta, "shape") and hasattr(meta, "dtype"):
        return tuple(int(s) for s in meta.shape)
    if isinstance(meta, (list, tuple)):
        return type(meta)(_shape_of(m) for m in meta) if not hasattr(meta, "_fields") else None
    if isinstance(meta, dict):
        return {k: _shape_of(v) for k, v in meta.items()}
    return None


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy to convert, so that the user's model is never modified."""
    refresh_hook_tensors(model)
    try:
        return copy.deepcopy(model)
    except Exception as exc:
        raise ConversionError(f"cannot copy {type(model).__name__} for conversion: {exc}") from exc
