"""What every slimmable layer shares: the class swap that turns a module into its slimmable
counterpart, and the temporary override of its tensors for one call of its own forward."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from .layout import Layout, Selection
from .parametrized import is_computed, overridable, parametrized_names, shadow, unshadow

_CLASSES: dict[tuple[type, type], type] = {}


class SlimLayer:
    """Mixin placed before a module's own class: ``forward`` slices the module's tensors to the
    active channels and calls the module's own forward with them, so behaviour added by a
    subclass (an activation fused into a norm, 'same' padding, weight standardisation) is kept."""

    # what ``slim_setup`` and the network set on the module: none of it belongs to the plain module
    slim_attributes: tuple[str, ...] = ()

    def slim_setup(self, **layouts: Any) -> None:
        raise NotImplementedError

    def selections(self, device: torch.device) -> dict[str, Selection]:
        """The active channels of each of the layer's channel roles (``in``/``out`` for a
        weight, ``channel`` for a norm): a count of leading channels or an index tensor."""
        raise NotImplementedError

    def narrowed(self, selections: dict[str, Selection]) -> tuple[dict[str, torch.Tensor | None], dict[str, Any]]:
        """The module's own tensors and size attributes at ``selections``: what ``forward``
        runs its own class's forward with, and what export makes permanent. Tensors are views of
        the layer's own where the selections are counts (batch norm: the statistics the width
        uses in eval mode)."""
        raise NotImplementedError

    def active_channels(self) -> dict[str, list[int]]:
        """The indices of :meth:`selections`."""
        return {role: list(range(s)) if isinstance(s, int) else s.tolist()
                for role, s in self.selections(torch.device("cpu")).items()}

    def tensor_layouts(self, tensor: torch.Tensor) -> list[tuple[int, Layout]]:
        """The dims of one of this layer's own tensors (a parameter, a buffer, a weight
        normalisation source) that follow a channel layout, as (dim, layout) pairs: what
        sorting permutes and what parameter counts and cost estimates shrink."""
        raise NotImplementedError


def make_slimmable(module: nn.Module, mixin: type, base: type | None = None, **layouts: Any) -> nn.Module:
    """Turn ``module`` into an instance of ``mixin`` + its own class (or ``base``, a compatible
    class such as ``SyncBatchNorm``), in place: its parameters, buffers, hooks and state-dict
    keys stay what they were."""
    if base is None:
        base = original_class(module) if isinstance(module, SlimLayer) else type(module)
    key = (mixin, base)
    if key not in _CLASSES:
        attributes = {"__module__": mixin.__module__, **overridable(base, parametrized_names(module))}
        _CLASSES[key] = type(f"Slim{base.__name__}", (mixin, base), attributes)
    module.__class__ = _CLASSES[key]
    module.slim_setup(**layouts)
    return module


def original_class(module: nn.Module) -> type:
    """The class a slimmable layer was made from."""
    return next(c for c in type(module).__mro__ if not issubclass(c, SlimLayer) and c is not type(module))


@contextmanager
def overridden(module: nn.Module, tensors: dict[str, torch.Tensor | None], **attributes: Any) -> Iterator[None]:
    """Within the block, ``module.<name>`` returns the given tensors (views of its own, so
    gradients and in-place statistics updates reach them) and attributes."""
    saved_tensors, shadowed = [], []
    for name, value in tensors.items():
        if is_computed(module, name):  # weight normalisation and other parametrizations
            shadowed.append((name, shadow(module, name, value)))
            continue
        store = module._parameters if name in module._parameters else module._buffers
        saved_tensors.append((store, name, store[name]))
        store[name] = value
    saved_attributes = {name: module.__dict__[name] for name in attributes}
    module.__dict__.update(attributes)
    try:
        yield
    finally:
        for store, name, value in saved_tensors:
            store[name] = value
        for name, token in shadowed:
            unshadow(module, name, token)
        module.__dict__.update(saved_attributes)
