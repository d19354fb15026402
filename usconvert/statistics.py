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
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor map for saving."""
        return {f"{key}.{name}": t for key, entry in self.entries.items() for name, t in entry.named_buffers()}

    def load_tensors(self, tensors: dict[str, torch.Tensor], labels: dict[str, str]) -> None:
        """Replace the store's entries with saved ones (in place where an entry exists, so that
        layers holding its tensors keep seeing them)."""
        for flat, tensor in tensors.items():
            key, name = flat.split(".", 1)
            if key not in self.entries:
                self.entries[key] = _Entry(labels.get(key, key))
            entry = self.entries[key]
            existing = entry._buffers.get(name)
            if existing is not None and existing.shape == tensor.shape:
                existing.copy_(tensor)
            else:
                entry.register_buffer(name, tensor)
        self.version += 1
