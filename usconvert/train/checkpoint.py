"""Training checkpoints, pickle-free: a usconvert network file (loadable by ``usconvert.load``)
with the optimizer's tensors and every rank's RNG states added as tensors, and everything else
(progress, settings, the per-epoch records) as JSON metadata.

The JSON-lines log next to the output is written from the records the checkpoint holds, right
after the checkpoint, so that the log on disk never holds an epoch the checkpoint does not (a
resumed run rewrites it from the checkpoint)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FileFormatError
from ..files import atomic_path
from ..net import SlimmableNet
from ..serialize import read_metadata, save

PREFIX = "__train__."


@dataclass
class Progress:
    epoch: int = 0  # the epoch in progress
    batch: int = 0  # batches of that epoch already trained
    step: int = 0  # optimizer steps so far
    # wall time spent training and validating, summed over every process that resumed the run
    # (a checkpoint written before this field existed starts it at 0)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


def _split_state(state: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a reference, collecting the tensors."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {"__dict__": [[_split_state(k, f"{prefix}.k{i}", tensors), _split_state(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(state.items())]}
    if isinstance(state, (list, tuple)):
        return {"__list__" if isinstance(state, list) else "__tuple__":
                [_split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(state)]}
    if isinstance(state, np.ndarray):
        return {"__ndarray__": state.tolist(), "dtype": str(state.dtype)}
    return state


def _join_state(state: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(state, dict):
        if "__tensor__" in state:
            return tensors[state["__tensor__"]]
        if "__dict__" in state:
            return {_join_state(k, tensors): _join_state(v, tensors) for k, v in state["__dict__"]}
        if "__list__" in state:
            return [_join_state(v, tensors) for v in state["__list__"]]
        if "__tuple__" in state:
            return tuple(_join_state(v, tensors) for v in state["__tuple__"])
        if "__ndarray__" in state:
            return np.array(state["__ndarray__"], dtype=state["dtype"])
    return state


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, net: SlimmableNet, *, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: Any, progress: Progress, config: dict[str, Any], history: list[dict[str, Any]],
                    rank_rng_states: list[dict[str, Any]]) -> None:
    """``rank_rng_states``: the RNG states of every rank, in rank order."""
    tensors: dict[str, torch.Tensor] = {}
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng_per_rank": rank_rng_states,
    }
    structure = _split_state(state, PREFIX, tensors)
    metadata = {"training": {"structure": structure, "progress": progress.as_dict(), "config": config,
                             "history": history}}
    save(net, path, extra_metadata=metadata, extra_tensors=tensors)


@dataclass
class Checkpoint:
    progress: Progress
    config: dict[str, Any]
    state: dict[str, Any]
    history: list[dict[str, Any]]

    def rng_states(self, rank: int, world_size: int) -> dict[str, Any] | None:
        """This rank's RNG states; None when the run had another number of processes."""
        states = self.state.get("rng_per_rank")
        if states is None:  # a checkpoint of an earlier release: one process's states
            states = [self.state["rng"]]
        return states[rank] if len(states) == world_size else None


def read_checkpoint(path: Path) -> Checkpoint:
    """The training state of a checkpoint (the network itself loads with ``usconvert.load``)."""
    from safetensors import safe_open

    metadata = read_metadata(path)
    training = metadata.get("training")
    if training is None:
        raise FileFormatError(f"{path} is a usconvert network but not a training checkpoint")
    tensors = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            if key.startswith(PREFIX):
                tensors[key] = f.get_tensor(key)
    state = _join_state(training["structure"], tensors)
    return Checkpoint(Progress(**training["progress"]), training["config"], state, training.get("history", []))


def checkpoint_path(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".safetensors") + ".checkpoint.safetensors")


def log_path(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".safetensors") + ".log.jsonl")


def write_log(path: Path, history: list[dict[str, Any]]) -> None:
    """The whole log, one JSON record per epoch, replaced atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(record) + "\n" for record in history))


def set_aside(path: Path) -> Path | None:
    """Move the file of an earlier run out of a fresh run's way (``x.log.jsonl`` to
    ``x.log.1.jsonl``, the first free number); returns where it went."""
    if not path.exists():
        return None
    stem, suffix = path.name.removesuffix(".jsonl"), ".jsonl"
    number = 1
    while (aside := path.with_name(f"{stem}.{number}{suffix}")).exists():
        number += 1
    path.rename(aside)
    return aside
