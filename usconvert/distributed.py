"""Running under torchrun: process group, rank, and the few collectives training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import UsconvertError


@dataclass
class Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        return self.sum([float(flag)], device)[0] > 0

    def sum_tensors(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.enabled:
            for t in tensors:
                dist.all_reduce(t)
        return tensors

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device: str) -> tuple[Distributed, torch.device]:
    """Join the process group when launched by torchrun; pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and device.split(":")[0] != "cuda":
        raise UsconvertError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device != "cpu" and not torch.cuda.is_available():
        raise UsconvertError(f"--device {device}: torch sees no CUDA device here")
    if device == "cuda":
        chosen = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return Distributed(world_size, rank, local_rank), chosen


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
