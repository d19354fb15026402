"""Building models by name: timm (``mobilenetv2_100``), torchvision (``tv:resnet18``) or a
user's own factory (``path/to/file.py:factory``). Nothing is downloaded: weights come from a
local file or stay random. A *source* dict records how a model was built, so that a saved
network can be rebuilt."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import FileFormatError, ModelNotFoundError

TORCHVISION_PREFIX = "tv:"
DEFAULT_INPUT_SIZE = (3, 224, 224)


def _timm_names() -> list[str]:
    import timm
    return timm.list_models()


def _torchvision_names() -> list[str]:
    import torchvision
    return torchvision.models.list_models(module=torchvision.models)


def parse_source(name: str, num_classes: int | None = None) -> dict[str, Any]:
    """The source dict for a model name, checking that the name exists."""
    kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
    if ".py:" in name:
        path, factory = name.rsplit(":", 1)
        return {"kind": "file", "path": str(Path(path).resolve()), "factory": factory, "kwargs": kwargs}
    if name.startswith(TORCHVISION_PREFIX):
        short = name[len(TORCHVISION_PREFIX):]
        if short not in _torchvision_names():
            raise ModelNotFoundError(_unknown(name))
        return {"kind": "torchvision", "name": short, "kwargs": kwargs}
    import timm
    if not timm.is_model(name):
        raise ModelNotFoundError(_unknown(name))
    return {"kind": "timm", "name": name, "kwargs": kwargs}


def _unknown(name: str) -> str:
    candidates = _timm_names() + [TORCHVISION_PREFIX + n for n in _torchvision_names()]
    close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.5)
    hint = f"; closest matches: {', '.join(close)}" if close else "; see `timm.list_models()` or use tv:NAME"
    return f"unknown model {name!r}{hint}"


def build(source: dict[str, Any]) -> nn.Module:
    """Build the model a source dict describes, with random weights."""
    kind, kwargs = source["kind"], dict(source.get("kwargs", {}))
    if kind == "timm":
        import timm
        return timm.create_model(source["name"], pretrained=False, **kwargs)
    if kind == "torchvision":
        import torchvision
        model = torchvision.models.get_model(source["name"], weights=None, **kwargs)
        model.pretrained_cfg = {"input_size": (3, *[_torchvision_input_side(model, source["name"])] * 2)}
        return model
    if kind == "file":
        return _build_from_file(Path(source["path"]), source["factory"], kwargs)
    raise FileFormatError(f"unknown model source kind {kind!r}")


def _torchvision_input_side(model: nn.Module, name: str) -> int:
    """The side a torchvision classifier is built for (a ViT's ``image_size``), else the crop of
    its default weights (299 for Inception v3, whose auxiliary head needs it), else 224."""
    import torchvision
    if isinstance(getattr(model, "image_size", None), int):
        return model.image_size
    try:
        crop = torchvision.models.get_model_weights(name).DEFAULT.transforms().crop_size
        return int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    except Exception:  # no weights enum, or no crop: the usual size
        return DEFAULT_INPUT_SIZE[-1]


def _build_from_file(path: Path, factory: str, kwargs: dict[str, Any]) -> nn.Module:
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"usconvert_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot import {path}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, factory, None)
    if not callable(fn):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        close = difflib.get_close_matches(factory, names, n=3)
        hint = f"; closest matches: {', '.join(close)}" if close else ""
        raise ModelNotFoundError(f"{path} has no factory {factory!r}{hint}")
    if "num_classes" in kwargs and "num_classes" not in inspect.signature(fn).parameters:
        raise ModelNotFoundError(f"{path}:{factory} takes no num_classes argument")
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelNotFoundError(f"{path}:{factory} returned {type(model).__name__}, not an nn.Module")
    return model


def default_input_size(model: nn.Module) -> tuple[int, ...]:
    """timm's pretrained config (or the one ``build`` gives a torchvision model) knows a model's
    input size; otherwise 3x224x224."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    return tuple(int(s) for s in size) if size else DEFAULT_INPUT_SIZE


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict (.safetensors, or .pth/.pt/.bin read with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FileFormatError(f"cannot read weights from {path}: {_first_line(exc)}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FileFormatError(f"{path} does not hold a state dict of tensors")
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {_few(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected {_few(result.unexpected_keys)}")
    if problems:
        raise FileFormatError(f"weights in {path} do not fit the model: {'; '.join(problems)}")


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return shown + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def create(name: str, *, num_classes: int | None = None, weights: str | Path | None = None
           ) -> tuple[nn.Module, dict[str, Any]]:
    """Build a model by name, optionally with local weights; returns the model and its source."""
    source = parse_source(name, num_classes)
    try:
        model = build(source)
    except (ModelNotFoundError, FileFormatError):
        raise
    except Exception as exc:
        raise ModelNotFoundError(f"building {name} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    if weights is not None:
        load_weights(model, weights)
    return model, source
