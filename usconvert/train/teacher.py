"""The frozen teacher of ``train --teacher``: the network as it was before training (the
original model's function: conversion and channel sorting keep width 1.0 exact), or another
network or exported model from a file. It runs once per batch, in eval mode, without gradients."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..dense import dense_module
from ..errors import first_line
from ..net import SlimmableNet
from .config import ConfigError

ORIGINAL = "original"


def build_teacher(spec: str, net: SlimmableNet) -> nn.Module:
    """``original``: a copy of ``net`` at width 1.0 as it is now (before any training step);
    else a file: a usconvert network (its width 1.0), or a model exported by usconvert to
    .safetensors or .pt2. Its output must have as many classes as ``net``'s."""
    if spec == ORIGINAL:
        teacher = dense_module(net, 1.0)
    else:
        teacher = _from_file(Path(spec), net)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    _check_outputs(teacher, net, spec)
    return teacher


def _from_file(path: Path, net: SlimmableNet) -> nn.Module:
    from ..errors import UsconvertError
    from ..export import is_exported, load_exported
    from ..serialize import load
    if not path.is_file():
        raise ConfigError(f"--teacher {path} does not exist (give original, a network file or an exported model)")
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    if path.suffix == ".onnx":
        raise ConfigError("--teacher cannot run an ONNX file in torch: export the teacher to .pt2 or .safetensors")
    try:
        if is_exported(path):
            return load_exported(path)
        return dense_module(load(path), 1.0)
    except UsconvertError as exc:
        raise ConfigError(f"--teacher {path}: {exc}") from None


def _check_outputs(teacher: nn.Module, net: SlimmableNet, spec: str) -> None:
    p = next(net.parameters())
    x = torch.zeros(2, *net.input_size, device=p.device, dtype=p.dtype)
    previous, was_training = net.width, net.training
    try:
        net.set_width(1.0)
        net.eval()
        with torch.no_grad():
            theirs, ours = teacher.to(p.device)(x), net(x)
    except RuntimeError as exc:
        raise ConfigError(f"--teacher {spec} cannot run on this network's input {tuple(net.input_size)}: "
                          f"{first_line(exc)}") from None
    finally:
        net.set_width(previous)
        net.train(was_training)
    if theirs.shape != ours.shape:
        raise ConfigError(f"--teacher {spec} outputs {tuple(theirs.shape[1:])} per example, the network "
                          f"{tuple(ours.shape[1:])}: a teacher must have the same classes")
