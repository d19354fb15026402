"""The eval cache: inference at one width runs that width as an ordinary module (no slicing,
no run-time channel ops) whose tensors are views of the network's own, so a write to a
weight, in place or through ``.data``, is seen at once. It is rebuilt when the width, the
statistics or a tensor object changes (replaced, ``.data`` set, loaded with ``assign=True``),
and bypassed while forward hooks are registered, so that they run."""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable

import torch
from torch import nn
from torch.nn.modules import module as _torch_module  # its global hook tables


class _RegistrationCount:
    """How many parameters, buffers and modules have been registered on any module: the cache
    re-reads its network's tensor objects when this changes (torch's registration hooks see
    ``module.weight = ...`` and ``load_state_dict(assign=True)``; reading every tensor of a
    large network on every call would cost more than the call)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *args: Any) -> None:
        self.count += 1


_REGISTRATIONS = _RegistrationCount()
for _register in (_torch_module.register_module_parameter_registration_hook,
                  _torch_module.register_module_buffer_registration_hook,
                  _torch_module.register_module_module_registration_hook):
    _register(_REGISTRATIONS)


def _forward_hooks_registered(modules: list[nn.Module]) -> bool:
    if _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _identity(tensors: Iterable[torch.Tensor]) -> tuple:
    """What changes when a tensor is replaced or written (the object, its storage, its version)."""
    return tuple((id(t), t.data_ptr(), t._version) for t in tensors)


class EvalCache:
    """One cached module for one model, keyed on the state the caller names and on the
    identity of every tensor of the model (and of ``extra_tensors``)."""

    def __init__(self) -> None:
        self._entry: tuple[Hashable, nn.Module | None] | None = None
        self._tensors: list[torch.Tensor] | None = None
        self._modules: list[nn.Module] = []
        self._registrations = -1

    def clear(self, *, tensors: bool = False) -> None:
        """Drop the cached module (and, with ``tensors``, the list of the model's tensors: they
        were replaced, as by ``.to()``)."""
        self._entry = None
        if tensors:
            self._tensors = None

    def get(self, model: nn.Module, state: Hashable, extra_tensors: Iterable[torch.Tensor],
            build: Callable[[], nn.Module | None]) -> nn.Module | None:
        """The cached module, built again by ``build`` when anything in its key changed; None
        (run the model itself) where ``build`` gives none or while forward hooks are registered."""
        if self._tensors is None or self._registrations != _REGISTRATIONS.count:
            self._registrations = _REGISTRATIONS.count
            self._tensors = list(model.parameters()) + list(model.buffers())
            self._modules = list(model.modules())
        if _forward_hooks_registered(self._modules):
            return None
        key = (state, _identity(self._tensors), _identity(extra_tensors))
        if self._entry is None or self._entry[0] != key:
            self._entry = None
            self._entry = (key, build())
        return self._entry[1]
