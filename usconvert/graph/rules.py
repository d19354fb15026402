"""The rule registries: how each module kind, function and tensor method moves channel spaces.

A rule receives a :class:`RuleContext` and returns the node's value (a :class:`TensorValue`,
a :class:`SizeValue` for a number computed from tensor sizes, a tuple/list of values, or None).
Rules are registered with decorators, one rule per key (a second registration is an error, so
that no rule silently replaces another); a module rule applies to subclasses too (looked up
along the MRO), so modules are recognised by what they are, not by their exact type. Anything
without a rule freezes the spaces it touches, and so does a rule that does not declare that it
reads sizes, for every channel count that reaches it as a number.
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


@dataclass(frozen=True, eq=False)
class SizeValue:
    """A number computed from tensor sizes, and where it came from.

    ``layouts``: the channel layouts of the dims it read (at run time their active sizes, not
    their traced ones); ``reads_fixed``: it also read a dim that carries no channel space (the
    batch, a spatial size); ``factors``: when it is exactly a product of dim sizes, those
    ``(tensor node, dim)`` reads, else None; ``channel``: when it is one channel count times a
    number that counts no channels (``B * C * num_patches_h``), that count's layout. A rule
    that uses such a number must know what it means at a reduced width; every other rule
    freezes ``layouts``.
    """

    layouts: tuple[SpaceLayout, ...] = ()
    reads_fixed: bool = False
    factors: tuple[tuple[Any, int], ...] | None = None
    channel: SpaceLayout | None = None

    @staticmethod
    def read(node: Any, dim: int, layout: SpaceLayout | None) -> "SizeValue":
        return SizeValue((layout,) if layout is not None else (), layout is None, ((node, dim),), layout)

    @staticmethod
    def combine(operands: list[Any], product: bool) -> "SizeValue":
        """The result of arithmetic on sizes (and literals): a product of reads stays one, and a
        product with one channel count in it stays proportional to that count."""
        sizes = [v for v in operands if isinstance(v, SizeValue)]
        factors = channel = None
        if product and len(sizes) == len(operands) and all(v.factors is not None for v in sizes):
            factors = tuple(f for v in sizes for f in v.factors)
        counting = [v for v in sizes if v.layouts]
        if product and len(counting) == 1 and counting[0].channel is not None:
            channel = counting[0].channel
        return SizeValue(tuple(layout for v in sizes for layout in v.layouts), any(v.reads_fixed for v in sizes),
                         factors, channel)


Rule = Callable[["RuleContext"], Any]

MODULE_RULES: dict[type, Rule] = {}
FUNCTION_RULES: dict[Any, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}


class DuplicateRuleError(KeyError):
    """A second rule for a key that has one: the later would silently replace the earlier."""


def _registrar(table: dict) -> Callable[..., Callable[[Rule], Rule]]:
    def keys(*keys: Any, reads_sizes: bool = False) -> Callable[[Rule], Rule]:
        def register(rule: Rule) -> Rule:
            for key in dict.fromkeys(keys):
                if key in table:
                    raise DuplicateRuleError(f"{key!r} already has the rule {table[key].__name__}; "
                                             f"refusing to replace it with {rule.__name__}")
                table[key] = rule
            if reads_sizes:
                SIZE_READERS.add(rule)
            return rule
        return register
    return keys


SIZE_READERS: set[Rule] = set()  # rules that give the channel counts reaching them as numbers a meaning


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
        yield from values_in((self.args, self.kwargs), TensorValue)

    def sizes(self) -> Iterator[SizeValue]:
        yield from values_in((self.args, self.kwargs), SizeValue)

    def freeze_inputs(self, reason: str) -> None:
        for value in self.tensors():
            for layout in value.dims:
                self.spaces.freeze(layout, f"{reason} at {self.where}")
        self.freeze_sizes(reason)

    def freeze_sizes(self, reason: str) -> None:
        """Channel counts used as numbers where no rule says what they mean at a reduced width
        (``x * x.shape[1] ** -0.5`` would scale by the active count): those spaces stay whole."""
        for size in self.sizes():
            for layout in size.layouts:
                self.spaces.freeze(layout, f"{reason}: a number computed from a channel count at {self.where}")

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


def values_in(value: Any, kind: type) -> Iterator[Any]:
    """Every value of ``kind`` in a node's value, through tuples, lists, dicts and slices."""
    if isinstance(value, kind):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from values_in(v, kind)
    elif isinstance(value, dict):
        for v in value.values():
            yield from values_in(v, kind)
    elif isinstance(value, slice):  # ``x[:, :H]``: a bound computed from sizes
        yield from values_in((value.start, value.stop, value.step), kind)
