"""The channel analysis: walk a traced graph in order and apply the rules to every node.

Results live in the analysis object, keyed by module name and by node: which modules become
slimmable layers and with which layouts (``bindings``), and which nodes must be rewritten into
run-time channel ops (``dynamic_ops``). Nothing is written onto the modules here.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

from torch import fx, nn
from torch.fx.node import map_arg

from . import function_rules, module_rules  # noqa: F401  (registers the rules)
from .rules import (FUNCTION_RULES, METHOD_RULES, SIZE_READERS, RuleContext, SizeValue, TensorValue,
                    values_in, describe_target, find_module_rule, fixed_value)
from ..nn.layout import MODEL_OUTPUT
from ..nn.parametrized import has_unsupported_hooks
from .spaces import SpaceGraph, SpaceLayout
from .trace import node_shape


@dataclass
class Binding:
    """A module that becomes a slimmable layer: its kind and the layouts of its channel dims."""

    kind: str
    layouts: dict[str, SpaceLayout | None]
    dim: int = 1


@dataclass
class DynamicOp:
    """A node whose channel arithmetic must follow the active width at run time."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


class ChannelAnalysis:
    freeze_constant_spaces = True  # see _freeze_spaces_of_constants (off: benchmarks/graph_diff.py measures it)

    def __init__(self, root: nn.Module, spaces: SpaceGraph | None = None):
        self.root = root
        self.spaces = spaces or SpaceGraph()
        self.bindings: dict[str, Binding] = {}
        self.dynamic_ops: dict[fx.Node, DynamicOp] = {}
        self.rule_errors: list[str] = []
        self._named: dict[str, SpaceLayout] = {}
        self._modules = dict(root.named_modules())
        self._tensor_reads: dict[str, tuple[SpaceLayout | None, ...]] = {}  # get_attr target -> its dims
        self._leaves: set[str] = set()  # modules called as one unit
        self._activation_layouts: list[SpaceLayout] = []  # the dims of every tensor computed from the input

    # -- called by rules ---------------------------------------------------------------------
    def space_for(self, key: str, size: int, frozen_reason: str | None = None, label: str | None = None
                  ) -> SpaceLayout:
        """The space of a channel dimension identified by ``key`` (named ``label``, default the
        key); the same across graphs and repeated calls."""
        if key not in self._named:
            self._named[key] = self.spaces.layout(label or key, size, frozen_reason)
        return self._named[key]

    def bind(self, module_name: str, kind: str, layouts: dict[str, SpaceLayout | None], dim: int = 1) -> None:
        module = self._modules[module_name]
        if has_unsupported_hooks(module):
            for layout in layouts.values():
                self.spaces.freeze(layout, f"{module_name} has forward pre-hooks (they may change its tensors)")
        existing = self.bindings.get(module_name)
        if existing is None:
            self.bindings[module_name] = Binding(kind, dict(layouts), dim)
            return
        for key, layout in layouts.items():
            old = existing.layouts[key]
            if old is None or layout is None:
                reason = f"{module_name} is called with fixed and with slimmable channels"
                self.spaces.freeze(old, reason)
                self.spaces.freeze(layout, reason)
            else:
                self.spaces.merge(old, layout, f"{module_name} called more than once")

    def dynamic(self, node: fx.Node, kind: str, **data: Any) -> None:
        self.dynamic_ops[node] = DynamicOp(kind, data)

    # -- the walk ----------------------------------------------------------------------------
    def run(self, graphs: list[fx.Graph]) -> None:
        """Analyse the model's graphs (train and eval) into one set of spaces."""
        for graph in graphs:
            self._run(graph)
        self._tie_tensor_reads()
        if self.freeze_constant_spaces:
            self._freeze_spaces_of_constants()

    def _run(self, graph: fx.Graph) -> None:
        values: dict[fx.Node, Any] = {}
        self.values = values  # rules may read what an earlier node's value is (whose shape a size reads)
        from_input: set[fx.Node] = set()
        for node in graph.nodes:
            if node.op == "placeholder":
                values[node] = fixed_value(node_shape(node))
            elif node.op == "get_attr":
                values[node] = self._attribute(node)
            elif node.op == "output":
                self._freeze_output(map_arg(node.args[0], lambda n: values[n]))
                continue
            else:
                if node.op == "call_module":
                    self._leaves.add(node.target)
                values[node] = self._apply_rule(node, values)
            for carrier in input_carriers(node, from_input):
                from_input.add(carrier)
                self._activation_layouts.extend(layout for value in values_in(values[carrier], TensorValue)
                                                for layout in value.dims if layout is not None)

    def _apply_rule(self, node: fx.Node, values: dict[fx.Node, Any]) -> Any:
        args = map_arg(node.args, lambda n: values[n])
        kwargs = map_arg(node.kwargs, lambda n: values[n])
        module = self._modules.get(node.target) if node.op == "call_module" else None
        ctx = RuleContext(node, args, kwargs, module, self.spaces, self)
        if node.op == "call_module":
            rule = find_module_rule(module)
            unknown = f"module {type(module).__name__} with no channel rule"
        elif node.op == "call_function":
            rule = FUNCTION_RULES.get(node.target)
            unknown = f"function {describe_target(node)} with no channel rule"
        else:
            rule = METHOD_RULES.get(node.target)
            unknown = f"method .{node.target}() with no channel rule"
        if rule is None:
            return ctx.opaque(unknown)
        if rule not in SIZE_READERS:
            ctx.freeze_sizes(f"{describe_target(node)} uses it as a value")
        try:
            return rule(ctx)
        except Exception as exc:  # a rule that cannot read this node must not stop the conversion
            self.rule_errors.append(f"{ctx.where}: {type(exc).__name__}: {exc}")
            return ctx.opaque(f"rule failed ({type(exc).__name__})")

    def _attribute(self, node: fx.Node) -> Any:
        shape = node_shape(node)
        meta = node.meta.get("tensor_meta")
        if not isinstance(shape, tuple) or not all(isinstance(s, int) for s in shape) or _metadata_only(node) or (
                meta is not None and not meta.dtype.is_floating_point):  # indices and masks hold no features
            return fixed_value(shape)
        dims = tuple(self.space_for(f"{node.target}:dim{d}", size) if size > 1 else None
                     for d, size in enumerate(shape))
        if any(dims):
            self.dynamic(node, "parameter", layouts=dims)
            self._tensor_reads[node.target] = dims
        return TensorValue(shape, dims)

    def _tie_tensor_reads(self) -> None:
        """A tensor of a layer read outside it (tied weights: ``y @ fc.weight``) is the layer's
        own: its dims shrink with the layer's channels, and a layer called whole keeps it whole."""
        for target, dims in self._tensor_reads.items():
            owner, _, name = target.rpartition(".")
            binding = self.bindings.get(owner)
            if binding is None:
                if any(owner == leaf or owner.startswith(leaf + ".") for leaf in self._leaves):
                    for layout in dims:
                        self.spaces.freeze(layout, f"{target} is also used whole by {owner or 'the model'}")
                continue
            expected = _layer_tensor_layouts(binding, self._modules[owner], name, len(dims))
            for d, layout in enumerate(dims):
                own = expected[d] if d < len(expected) else None
                if layout is None:
                    continue
                if own is None:
                    self.spaces.freeze(layout, f"{target} read outside {owner}, whose channels here are fixed")
                else:
                    self.spaces.merge(layout, own, f"{target} read outside {owner}")

    def _freeze_spaces_of_constants(self) -> None:
        """A space that no tensor computed from the input carries (the hidden width of Swin V2's
        position-bias network, the offsets of a relative-position table) narrows only constants:
        at a fixed width they fold into one tensor, so slimming them saves nothing per input and
        only takes capacity (and the coordinate pair of a position table is no channel at all)."""
        carried = {atom for layout in self._activation_layouts for atom, _ in self.spaces.expand(layout)}
        for atom in self.spaces.nodes:
            if atom.definition is None and not atom.frozen_reasons and atom not in carried:
                self.spaces.freeze(((atom, 1),), "carried by no activation (only by tensors computed without the "
                                   "input): narrowing it saves no computation per input")

    def _freeze_output(self, value: Any) -> None:
        if isinstance(value, TensorValue):
            for layout in value.dims:
                self.spaces.freeze(layout, MODEL_OUTPUT)
        elif isinstance(value, SizeValue):  # a channel count returned: the caller reads the full one
            for layout in value.layouts:
                self.spaces.freeze(layout, f"{MODEL_OUTPUT}: a number computed from a channel count")
        elif isinstance(value, (list, tuple)):
            for v in value:
                self._freeze_output(v)
        elif isinstance(value, dict):
            for v in value.values():
                self._freeze_output(v)


def _layer_tensor_layouts(binding: Binding, module: nn.Module, name: str, rank: int
                          ) -> tuple[SpaceLayout | None, ...]:
    """The layouts of the dims of a slimmable layer's own tensor ``name``, as the layer slices it."""
    if binding.kind in ("conv", "linear"):
        if name == "weight":
            grouped = getattr(module, "groups", 1) > 1
            return (binding.layouts["out"], None if grouped else binding.layouts["in"]) + (None,) * (rank - 2)
        return (binding.layouts["out"],) + (None,) * (rank - 1)  # bias, a per-output gain
    if binding.kind == "recurrent":
        first_input = name in ("weight_ih_l0", "weight_ih_l0_reverse")
        return (None, binding.layouts["in"] if first_input else None) + (None,) * (rank - 2)
    return (binding.layouts["channels"],) + (None,) * (rank - 1)  # norm weight, bias, statistics


_NO_DATA = ("device", "dtype", "is_cuda", "requires_grad")  # read off the input, they carry none of it
_METADATA = _NO_DATA + ("shape", "ndim")
_IN_PLACE_OPERATORS = (operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv,
                       operator.ifloordiv, operator.imod, operator.ipow, operator.imatmul)


def input_carriers(node: fx.Node, from_input: set[fx.Node]) -> list[fx.Node]:
    """The nodes that hold the input's data once ``node`` has run, given those that held it
    before: the node itself where it computes with one of them (not where it only reads a
    device or dtype, ``table.to(x.dtype)``, ``table.type_as(x)``), and the tensor it writes into
    in place (``canvas[:] = features``, ``t.add_(x)``), which holds it from then on."""
    if node.op != "placeholder" and not any(arg in from_input for arg in _data_inputs(node)):
        return []
    if _writes_in_place(node) and isinstance(node.args[0], fx.Node):
        return [node, node.args[0]]
    return [node]


def _writes_in_place(node: fx.Node) -> bool:
    """``x[item] = value``, ``x.add_(y)``, ``torch.relu_(x)``: the op writes into its first argument."""
    if node.op == "call_function" and node.target in _IN_PLACE_OPERATORS:
        return True
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return node.op in ("call_method", "call_function") and isinstance(name, str) and name.endswith("_") \
        and not name.endswith("__")


def _data_inputs(node: fx.Node) -> list[fx.Node]:
    if node.op == "call_function" and node.target is getattr and node.args[1] in _NO_DATA:
        return []
    if node.op == "call_method" and node.target in ("to", "type_as"):
        return [node.args[0]] if isinstance(node.args[0], fx.Node) else []
    return node.all_input_nodes


def _metadata_only(node: fx.Node) -> bool:
    """A tensor read only for its device, dtype or shape (timm's ``self.proj.weight.device``):
    nothing to slice, and slicing a layer's own weight there would shadow the layer's."""
    return bool(node.users) and all(user.op == "call_function" and user.target is getattr
                                    and user.args[1] in _METADATA for user in node.users)
