"""Symbolic tracing with torch.fx, the way timm and torchvision trace for feature extraction.

Leaves are torch.nn's own modules, timm's registered no-trace modules, and every subclass of a
layer kind the slimmable layers handle (so timm's ``BatchNormAct2d`` or ``Conv2dSame`` are called
as one unit and keep their own forward). Control flow that depends on ``self.training`` is baked
in by tracing, so a model is traced in both modes, as torchvision's ``DualGraphModule`` does.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ConversionError
from ..nn.kinds import SLIMMABLE_LAYER_TYPES
from ..nn.parametrized import detach_hook_tensors

try:  # timm is a dependency, but tracing plain torch models must not need it
    from timm.layers import _fx as timm_fx
except ImportError:  # pragma: no cover
    timm_fx = None


def _notrace_modules() -> tuple[type, ...]:
    return tuple(timm_fx.get_notrace_modules()) if timm_fx else ()


def _notrace_functions() -> tuple[Any, ...]:
    return tuple(timm_fx.get_notrace_functions()) if timm_fx else ()


class SlimTracer(fx.Tracer):
    """Slimmable layers are leaves. So are the modules timm registers as not traceable, but only
    those that really fail to trace: timm registers whole blocks (NormFreeBlock, MobileVitBlock)
    whose forward traces fine, and a leaf block's channels all freeze."""

    def __init__(self, traceable: dict[int, bool] | None = None) -> None:
        super().__init__(autowrap_functions=_notrace_functions())
        self._notrace = _notrace_modules()
        self._traceable = traceable if traceable is not None else {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, SLIMMABLE_LAYER_TYPES):
            return True
        if isinstance(m, self._notrace):
            return not self._traces(m)
        return super().is_leaf_module(m, module_qualified_name)

    def _traces(self, m: nn.Module) -> bool:
        key = id(m)
        if key not in self._traceable:
            self._traceable[key] = False  # while trying: a module containing itself stays a leaf
            try:
                SlimTracer(self._traceable).trace(m)
                self._traceable[key] = True
            except Exception:
                pass
        return self._traceable[key]


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
    graphs = {}
    for mode in (True, False):
        model.train(mode)
        try:
            graph = SlimTracer().trace(model, concrete_args=_optional_arguments(model))
        except Exception as exc:  # fx raises many types; the user needs the cause in one line
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(f"torch.fx cannot trace {type(model).__name__}: {first_line}") from exc
        graphs[mode] = graph
    model.eval()
    train_graph, eval_graph = graphs[True], graphs[False]
    if train_graph.python_code("self").src == eval_graph.python_code("self").src:
        eval_graph = train_graph
    traced = TracedModel(model, train_graph, eval_graph)
    for graph in traced.graphs:
        _propagate_shapes(model, graph, example)
    return traced


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
        except Exception as exc:
            cause = exc.__cause__ or exc  # ShapeProp wraps the model's own error in one naming the node
            text = str(cause).strip()
            first = text.splitlines()[0] if text else type(cause).__name__
            raise ConversionError(
                f"the model does not run on an input of shape {tuple(example.shape)} (a batch of "
                f"--input-size {','.join(map(str, example.shape[1:]))}): {first}"
            ) from exc


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
    detach_hook_tensors(model)
    try:
        return copy.deepcopy(model)
    except Exception as exc:
        raise ConversionError(f"cannot copy {type(model).__name__} for conversion: {exc}") from exc
