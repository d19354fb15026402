"""Layers whose weight is computed (weight normalisation, any ``torch.nn.utils.parametrize``
parametrization, and the older ``weight_norm`` hook).

A slimmed layer uses its full computed weight, sliced: the network at any width stays a
sub-network of the full one (what the paper's US-WDSR does: weight normalisation "requires no
further modification"). Other forward pre-hooks run arbitrary code, so layers with them freeze.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.weight_norm import WeightNorm, remove_weight_norm

_OVERRIDES = "_slim_overrides"  # instance dict entry: tensors that shadow computed ones for one call


def parametrized_names(module: nn.Module) -> list[str]:
    return list(module.parametrizations.keys()) if parametrize.is_parametrized(module) else []


def hook_names(module: nn.Module) -> list[str]:
    """Tensors set by ``torch.nn.utils.weight_norm`` hooks before every forward."""
    return [hook.name for hook in module._forward_pre_hooks.values() if isinstance(hook, WeightNorm)]


def hook_sources(module: nn.Module) -> set[str]:
    """The parameters a ``weight_norm`` hook computes its tensor from (``weight_g``, ``weight_v``)."""
    return {f"{name}{suffix}" for name in hook_names(module) for suffix in ("_g", "_v")}


def has_unsupported_hooks(module: nn.Module) -> bool:
    return any(not isinstance(hook, WeightNorm) for hook in module._forward_pre_hooks.values())


def overridable(base: type, names: list[str]) -> dict[str, property]:
    """Class attributes for a slimmable subclass of a parametrized class: each computed tensor
    can be shadowed for one call (the parametrization's property would win over instance state)."""

    def shadowing(name: str, computed: property) -> property:
        def get(self: nn.Module):
            shadow = self.__dict__.get(_OVERRIDES)
            if shadow is not None and name in shadow:
                return shadow[name]
            return computed.__get__(self, type(self))

        return property(get, computed.__set__)

    return {name: shadowing(name, getattr(base, name)) for name in names}


def shadow(module: nn.Module, name: str, value) -> object:
    """Shadow a computed tensor; returns a token for :func:`unshadow`."""
    if name in parametrized_names(module):
        module.__dict__.setdefault(_OVERRIDES, {})[name] = value
        return None
    previous = module.__dict__[name]  # a weight_norm hook's tensor is a plain attribute
    module.__dict__[name] = value
    return previous


def unshadow(module: nn.Module, name: str, token: object) -> None:
    if name in parametrized_names(module):
        module.__dict__[_OVERRIDES].pop(name)
    else:
        module.__dict__[name] = token


def is_computed(module: nn.Module, name: str) -> bool:
    return name in parametrized_names(module) or name in hook_names(module)


def bake(module: nn.Module, plain_class: type) -> type:
    """Replace every computed tensor of ``module`` by a parameter holding its current value;
    returns the class the module has without its parametrizations. (Not torch's
    ``remove_parametrizations``: it deletes the property from a class that deep copies share.)"""
    for hook_name in hook_names(module):
        remove_weight_norm(module, hook_name)
    names = parametrized_names(module)
    if not names:
        return plain_class
    values = {name: getattr(module, name).detach().clone() for name in names}
    unparametrized = plain_class.__bases__[0]  # parametrize's generated class has one base
    module.__class__ = unparametrized
    del module._modules["parametrizations"]
    for name, value in values.items():
        module.register_parameter(name, nn.Parameter(value))
    return unparametrized


def refresh_hook_tensors(root: nn.Module) -> None:
    """Recompute the tensor of every ``weight_norm`` hook from its current sources, without
    autograd: the value a hook left behind is the last forward's (stale after an optimizer step)
    and part of its autograd graph (not deep-copyable)."""
    with torch.no_grad():
        for module in root.modules():
            for hook in module._forward_pre_hooks.values():
                if isinstance(hook, WeightNorm):
                    hook(module, ())
