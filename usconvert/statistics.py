"""Per-width batch-norm statistics (the paper's BN post-statistics), keyed by the active
channel configuration of the whole network: a layer's statistics depend on every width
upstream of it, not only on its own channel count."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

_ESCAPE = "~"  # module and buffer names may not contain "."


def configuration_key(actives: list[int]) -> str:
    """A short stable key for the active counts of a network's slimmable spaces."""
    return "w" + hashlib.sha1(",".join(map(str, actives)).encode()).hexdigest()[:16]


class _Entry(nn.Module):
    def __init__(self, label: str):
        super().__init__()
        self.label = label


class StatisticsStore(nn.Module):
    """Running mean and variance per batch-norm layer per width configuration, as buffers so
    they follow ``.to()`` and land in the saved file."""

    def __init__(self) -> None:
        super().__init__()
        self.entries = nn.ModuleDict()
        self.version = 0  # bumped on every change, so that caches of a width know

    def labels(self) -> dict[str, str]:
        return {key: entry.label for key, entry in self.entries.items()}

    def put(self, key: str, label: str, layer: str, running_mean: torch.Tensor, running_var: torch.Tensor) -> None:
        if key not in self.entries:
            self.entries[key] = _Entry(label)
        entry = self.entries[key]
        name = layer.replace(".", _ESCAPE)
        entry.register_buffer(f"{name}{_ESCAPE}mean", running_mean.detach().clone())
        entry.register_buffer(f"{name}{_ESCAPE}var", running_var.detach().clone())
        self.version += 1

    def put_affine(self, key: str, label: str, layer: str, weight: torch.Tensor, bias: torch.Tensor,
                   channels: list[int]) -> None:
        """Private weight and bias of a batch-norm layer at one width (switchable batch norm),
        trainable, with the channel indices they belong to."""
        if key not in self.entries:
            self.entries[key] = _Entry(label)
        entry = self.entries[key]
        name = layer.replace(".", _ESCAPE)
        entry.register_parameter(f"{name}{_ESCAPE}weight", nn.Parameter(weight.detach().clone()))
        entry.register_parameter(f"{name}{_ESCAPE}bias", nn.Parameter(bias.detach().clone()))
        entry.register_buffer(f"{name}{_ESCAPE}channels", torch.tensor(channels, dtype=torch.long,
                                                                         device=weight.device))
        self.version += 1

    def affine(self, key: str) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Layer -> (weight, bias, channel indices) of the private parameters of a width."""
        entry = self.entries[key] if key in self.entries else None
        if entry is None:
            return {}
        params, buffers = entry._parameters, entry._buffers
        suffix = f"{_ESCAPE}weight"
        return {name[: -len(suffix)].replace(_ESCAPE, "."):
                (params[name], params[name[: -len(suffix)] + f"{_ESCAPE}bias"],
                 buffers[name[: -len(suffix)] + f"{_ESCAPE}channels"])
                for name in params if name.endswith(suffix)}

    def get(self, key: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        entry = self.entries[key] if key in self.entries else None
        if entry is None:
            return None
        buffers = dict(entry.named_buffers())
        out = {}
        for name, mean in buffers.items():
            if name.endswith(f"{_ESCAPE}mean"):
                stem = name[: -len(f"{_ESCAPE}mean")]
                out[stem.replace(_ESCAPE, ".")] = (mean, buffers[f"{stem}{_ESCAPE}var"])
        return out or None

    def remove(self, key: str) -> None:
        """Drop one width's entry."""
        if key in self.entries:
            del self.entries[key]
            self.version += 1

    def restore(self, key: str, entry: nn.Module) -> None:
        """Put back an entry taken out (with :meth:`remove`) or copied before."""
        self.entries[key] = entry
        self.version += 1

    def clear(self) -> None:
        """Drop every width's statistics and private parameters."""
        self.entries = nn.ModuleDict()
        self.version += 1

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor map for saving."""
        return {f"{key}.{name}": t for key, entry in self.entries.items()
                for name, t in [*entry.named_buffers(), *entry.named_parameters()]}

    def load_tensors(self, tensors: dict[str, torch.Tensor], labels: dict[str, str]) -> None:
        """Replace the store's entries with saved ones (in place where an entry exists, so that
        layers holding its tensors keep seeing them)."""
        for flat, tensor in tensors.items():
            key, name = flat.split(".", 1)
            if key not in self.entries:
                self.entries[key] = _Entry(labels.get(key, key))
            entry = self.entries[key]
            is_parameter = name.endswith((f"{_ESCAPE}weight", f"{_ESCAPE}bias"))
            existing = (entry._parameters if is_parameter else entry._buffers).get(name)
            if existing is not None and existing.shape == tensor.shape:
                with torch.no_grad():
                    existing.copy_(tensor)
            elif is_parameter:
                entry.register_parameter(name, nn.Parameter(tensor))
            else:
                entry.register_buffer(name, tensor)
        self.version += 1
