"""The rewrite: turn the analysis into a runnable slimmable GraphModule.

Atomic analysis spaces become run-time :class:`Space` objects, bound modules become slimmable
layers in place (same objects, same parameters), and nodes with channel constants are replaced
by run-time channel ops.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from ..nn import (LAYER_CLASSES, ActiveSize, ChannelSlice, ChannelSplit, Layout, ParameterSlice, Space,
                  make_slimmable)
from .analyze import ChannelAnalysis, DynamicOp
from .spaces import SpaceLayout
from .trace import TracedModel


@dataclass
class Rewritten:
    module: fx.GraphModule
    train_graph: fx.Graph
    eval_graph: fx.Graph
    spaces: list[Space]
    layers: dict[str, nn.Module]


class _SpaceTable:
    """Maps analysis layouts to run-time layouts over one shared set of run-time spaces."""

    def __init__(self, analysis: ChannelAnalysis):
        self.graph = analysis.spaces
        self.spaces: dict[int, Space] = {}

    def layout(self, layout: SpaceLayout | None) -> Layout | None:
        if layout is None:
            return None
        return Layout(tuple((self._space(atom), inner) for atom, inner in self.graph.expand(layout)))

    def _space(self, atom) -> Space:
        if atom.index not in self.spaces:
            reasons = list(atom.frozen_reasons) or (["a single channel"] if atom.size <= 1 else [])
            self.spaces[atom.index] = Space(atom.name, atom.size, atom.step, atom.unit_channels, reasons)
        return self.spaces[atom.index]

    def ordered(self) -> list[Space]:
        spaces = [self.spaces[i] for i in sorted(self.spaces)]
        seen: dict[str, int] = {}
        for space in spaces:  # names are how users address spaces: keep them unique
            if space.name in seen:
                seen[space.name] += 1
                space.name = f"{space.name}#{seen[space.name]}"
            else:
                seen[space.name] = 0
        return spaces


def rewrite(traced: TracedModel, analysis: ChannelAnalysis) -> Rewritten:
    table = _SpaceTable(analysis)
    root = traced.root
    layers: dict[str, nn.Module] = {}
    for name, binding in analysis.bindings.items():
        module = root.get_submodule(name)
        layouts = {key: table.layout(layout) for key, layout in binding.layouts.items()}
        if binding.kind in ("conv", "linear"):
            make_slimmable(module, LAYER_CLASSES[binding.kind], in_layout=layouts["in"], out_layout=layouts["out"])
        elif binding.kind == "recurrent":
            make_slimmable(module, LAYER_CLASSES[binding.kind], in_layout=layouts["in"])
        else:
            make_slimmable(module, LAYER_CLASSES[binding.kind], channels=layouts["channels"], dim=binding.dim)
        layers[name] = module
        for layout in layouts.values():
            for space, _ in (layout.segments if layout is not None else ()):
                if name not in space.members:
                    space.members.append(name)

    gm = fx.GraphModule(root, traced.train_graph, class_name=type(root).__name__)
    tagged = [("train", traced.train_graph)]
    if traced.eval_graph is not traced.train_graph:
        tagged.append(("eval", traced.eval_graph))
    for graph_tag, graph in tagged:
        graph.owning_module = gm  # shape propagation left the eval graph owned by a temporary module
        for node in list(graph.nodes):
            if node.op in ("call_module", "get_attr") and not _has_path(gm, node.target):
                _copy_path(root, gm, node.target)
            op = analysis.dynamic_ops.get(node)
            if op is not None:
                _insert_runtime_op(gm, graph, node, op, table, graph_tag)
    gm.graph = traced.train_graph  # recompiles with the inserted ops
    return Rewritten(gm, traced.train_graph, traced.eval_graph, table.ordered(), layers)


def _insert_runtime_op(gm: fx.GraphModule, graph: fx.Graph, node: fx.Node, op: DynamicOp, table: _SpaceTable,
                       graph_tag: str) -> None:
    data = op.data
    if op.kind == "sizes":
        _follow_sizes(gm, graph, node, {d: table.layout(layout) for d, layout in data["dims"].items()},
                      data["constants"], data["scaled"], graph_tag)
        return
    if op.kind == "parameter":
        layouts = tuple(table.layout(layout) for layout in data["layouts"])
        if all(layout is None or all(s.frozen for s, _ in layout.segments) for layout in layouts):
            return
        helper: nn.Module = ParameterSlice(layouts)
    elif op.kind == "split":
        helper = ChannelSplit(data["dim"], [table.layout(p) for p in data["pieces"]])
    elif op.kind == "slice":
        before = table.layout(data["before"]) if data["before"] else None
        helper = ChannelSlice(data["items"], data["position"], before, table.layout(data["piece"]))
    else:  # pragma: no cover - the analysis only records the kinds above
        raise ValueError(op.kind)
    name = f"usconvert_{graph_tag}_{node.name}"
    gm.add_submodule(name, helper)
    if op.kind == "parameter":
        with graph.inserting_after(node):
            new = graph.call_module(name, (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    else:
        with graph.inserting_before(node):
            new = graph.call_module(name, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)


def _follow_sizes(gm: fx.GraphModule, graph: fx.Graph, node: fx.Node, layouts: dict[int, Layout],
                  constants: dict[int, int], scaled: frozenset[int], graph_tag: str) -> None:
    """Replace the sizes of a view/reshape at these output dims by run-time active sizes (of the
    computed size, at ``scaled`` dims), or by constants (dims fixed whatever the width)."""
    if "shape" in node.kwargs:
        sizes = list(node.kwargs["shape"])
    elif len(node.args) == 2 and isinstance(node.args[1], (list, tuple)):
        sizes = list(node.args[1])
    else:
        sizes = list(node.args[1:])
    for d, layout in layouts.items():
        name = f"usconvert_{graph_tag}_{node.name}_size{d}"
        gm.add_submodule(name, ActiveSize(layout, scaled=d in scaled))
        with graph.inserting_before(node):
            sizes[d] = graph.call_module(name, (sizes[d],) if d in scaled else ())
    sizes = [constants.get(d, size) for d, size in enumerate(sizes)]
    if "shape" in node.kwargs:
        node.kwargs = {**node.kwargs, "shape": tuple(sizes)}
    elif len(node.args) == 2 and isinstance(node.args[1], (list, tuple)):
        node.args = (node.args[0], tuple(sizes))
    else:
        node.args = (node.args[0], *sizes)


def _has_path(gm: nn.Module, target: str) -> bool:
    obj = gm
    for part in target.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _copy_path(root: nn.Module, gm: nn.Module, target: str) -> None:
    """Make ``gm.<target>`` the same object as ``root.<target>``, creating empty parents."""
    *parents, leaf = target.split(".")
    src, dst = root, gm
    for part in parents:
        src = getattr(src, part)
        if not hasattr(dst, part):
            dst.add_module(part, nn.Module())
        dst = getattr(dst, part)
    value = getattr(src, leaf)
    if isinstance(value, nn.Module):
        dst.add_module(leaf, value)
    elif isinstance(value, nn.Parameter):
        dst.register_parameter(leaf, value)
    elif leaf in src._buffers:
        dst.register_buffer(leaf, value)
    else:
        setattr(dst, leaf, value)
