"""The rule registries: how each module kind, function and tensor method moves channel spaces.

A rule receives a :class:`RuleContext` and returns the node's value (a :class:`TensorValue`,
a tuple/list of values, or None for non-tensors). Rules are registered with decorators; a
module rule applies to subclasses too (looked up along the MRO), so modules are recognised by
what they are, not by their exact type. Anything without a rule freezes the spaces it touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from torch import fx, nn

from .spaces import SpaceGraph, SpaceLayout
from .trace import node_shape


@dataclass
class TensorValue:
    shape: tuple[int, ...]
    dims: tuple[SpaceLayout | None, ...]


Rule = Callable[["RuleContext"], Any]

MODULE_RULES: dict[type, Rule] = {}
FUNCTION_RULES: dict[Any, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}


def _registrar(table: dict) -> Callable[..., Callable[[Rule], Rule]]:
    def keys(*keys: Any) -> Callable[[Rule], Rule]:
        def register(rule: Rule) -> Rule:
            for key in keys:
                table[key] = rule
            return rule
        return register
    return keys


module_rule = _registrar(MODULE_RULES)  # by module class; subclasses find it along their MRO
function_rule = _registrar(FUNCTION_RULES)  # by function object
method_rule = _registrar(METHOD_RULES)  # by tensor method name


def find_module_rule(module: nn.Module) -> Rule | None:
    for cls in type(module).__mro__:
        if cls in MODULE_RULES:
            return MODULE_RULES[cls]
    return None


def describe_target(node: fx.Node) -> str:
    target = node.target
    if node.op == "call_function":
        return getattr(target, "__name__", None) or str(target)
    return str(target)


class RuleContext:
    """What a rule sees of one node: its arguments as values, the module, the space graph."""

    def __init__(self, node: fx.Node, args: tuple, kwargs: dict, module: nn.Module | None,
                 spaces: SpaceGraph, analysis: Any):
        self.node = node
        self.args = args
        self.kwargs = kwargs
        self.module = module
        self.spaces = spaces
        self.analysis = analysis

    @property
    def where(self) -> str:
        return f"{self.node.name} ({describe_target(self.node)})"

    @property
    def out_shape(self) -> Any:
        return node_shape(self.node)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)

    def raw_arg(self, index: int, name: str, default: Any = None) -> Any:
        """The argument as written in the graph (a Node or a literal), not its value."""
        if index < len(self.node.args):
            return self.node.args[index]
        return self.node.kwargs.get(name, default)

    def tensors(self) -> Iterator[TensorValue]:
        yield from _tensors_in((self.args, self.kwargs))

    def freeze_inputs(self, reason: str) -> None:
        for value in self.tensors():
            for layout in value.dims:
                self.spaces.freeze(layout, f"{reason} at {self.where}")

    def fixed_output(self) -> Any:
        return fixed_value(self.out_shape)

    def opaque(self, reason: str) -> Any:
        """The safe default: freeze every input space, output carries no space."""
        self.freeze_inputs(reason)
        return self.fixed_output()

    def new_layout(self, suffix: str, size: int, frozen_reason: str | None = None) -> SpaceLayout:
        """The space a node creates: named after its module (a layer's, or for a function or
        method, the module whose forward calls it), the same object in the train and eval graphs."""
        if self.node.op == "call_module":
            return self.analysis.space_for(f"{self.node.target}:{suffix}", size, frozen_reason)
        stack = self.node.meta.get("nn_module_stack") or {}
        owner = next(reversed(stack.values()))[0] if stack else ""
        label = f"{owner}:{suffix}" if owner else f"{self.node.name}:{suffix}"
        return self.analysis.space_for(f"{self.node.name}@{owner}:{suffix}", size, frozen_reason, label=label)


def fixed_value(shape: Any) -> Any:
    if shape is None:
        return None
    if isinstance(shape, tuple) and all(isinstance(s, int) for s in shape):
        return TensorValue(shape, (None,) * len(shape))
    if isinstance(shape, (list, tuple)):
        return type(shape)(fixed_value(s) for s in shape)
    if isinstance(shape, dict):
        return {k: fixed_value(v) for k, v in shape.items()}
    return None


def _tensors_in(value: Any) -> Iterator[TensorValue]:
    if isinstance(value, TensorValue):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors_in(v)
