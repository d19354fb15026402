"""Building models by name: timm (``mobilenetv2_100``), torchvision (``tv:resnet18``) or a
user's own factory (``path/to/file.py:factory``), with random weights, a local state dict, or
pretrained weights loaded through the library's own mechanism (timm's ``pretrained=True`` with
its hub cache, or its ``pretrained_cfg_overlay`` for a local file; torchvision's
``weights="DEFAULT"`` with torch's hub cache). A *source* dict records how a model was built,
so that a saved network can be rebuilt (with random weights: the file holds the weights)."""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import inspect
import io
import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import FileFormatError, ModelNotFoundError, WeightsError, first_line

TORCHVISION_PREFIX = "tv:"
DEFAULT_INPUT_SIZE = (3, 224, 224)
VIDEO_FRAMES = 16  # the clip length of torchvision's video classification recipe


def _timm_names(pretrained: bool = False) -> list[str]:
    import timm
    return timm.list_models(pretrained=pretrained)


def _torchvision_names() -> list[str]:
    """torchvision's image and video classifiers (the video ones take C,T,H,W clips)."""
    import torchvision
    return [*torchvision.models.list_models(module=torchvision.models), *_torchvision_video_names()]


def _torchvision_video_names() -> list[str]:
    import torchvision
    return torchvision.models.list_models(module=torchvision.models.video)


def list_models(source: str = "all", pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """The names ``create`` takes: timm's, and torchvision's image and video classifiers as
    ``tv:NAME``; only those matching the glob ``pattern``; with ``pretrained``, only those with
    pretrained weights (timm's names then carry their weight tag, ``resnet18.a1_in1k``)."""
    import fnmatch
    if source not in ("timm", "torchvision", "all"):
        raise ModelNotFoundError(f"the model source must be timm, torchvision or all, got {source!r}")
    names: list[str] = []
    if source in ("timm", "all"):
        names += _timm_names(pretrained)
    if source in ("torchvision", "all"):
        names += [TORCHVISION_PREFIX + n for n in _torchvision_names()]  # each has weights
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return sorted(names)


def parse_source(name: str, num_classes: int | None = None, model_kwargs: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The source dict for a model name, checking that the name exists. ``model_kwargs`` go to
    the model's factory (timm's ``--model-kwargs``: ``img_size=32``, ``depth=6``)."""
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
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
        model.pretrained_cfg = _torchvision_config(model, source["name"])
        return model
    if kind == "file":
        return _build_from_file(Path(source["path"]), source["factory"], kwargs)
    raise FileFormatError(f"unknown model source kind {kind!r}")


def _torchvision_config(model: nn.Module, name: str) -> dict[str, Any]:
    """timm's pretrained config for a torchvision classifier: its input size and, from its
    default weights' transforms, the preprocessing they expect (mean and std, which differ from
    ImageNet's for the video models; bilinear resizing; the crop's share of the resized side,
    0.875 for 224 of 256, 0.966 for the 224 of 232 of the second ImageNet recipe).

    C,H,W for an image classifier: the side it is built for (a ViT's ``image_size``), else the
    crop of its default weights (299 for Inception v3, whose auxiliary head needs it), else
    224. C,T,H,W for a video classifier: that crop and the clip length its weights were
    evaluated with (16 frames for the ResNets and MViTs, 32 for Video Swin, 128 for S3D), the
    frame rate clips were resampled to (15 a second, 7.5 for the MViTs) and the clips per video
    whose mean prediction their accuracy counts (5; 12 for Video Swin, 1 for S3D)."""
    import torchvision
    config: dict[str, Any] = {}
    side, meta = DEFAULT_INPUT_SIZE[-1], {}
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        transforms, meta = weights.transforms(), weights.meta
        crop = transforms.crop_size
        side = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
        config.update(mean=tuple(transforms.mean), std=tuple(transforms.std),
                      interpolation=transforms.interpolation.value, crop_pct=side / min(transforms.resize_size))
    except Exception:  # no weights enum, or no crop: the usual size and ImageNet's statistics
        pass
    if isinstance(getattr(model, "image_size", None), int):
        side = model.image_size
    if name in _torchvision_video_names():
        docs = meta.get("_docs", "")  # the metadata's only record of the clip length, frame rate and clips
        clip, rate = re.search(r"clip_len=(\d+)", docs), re.search(r"frame_rate=([\d.]+)", docs)
        clips = re.search(r"clips_per_video=(\d+)", docs)
        frames = max(int(clip.group(1)) if clip else VIDEO_FRAMES, meta.get("min_temporal_size") or 1)
        config["input_size"] = (3, frames, side, side)
        if rate:
            config["frame_rate"] = float(rate.group(1))
        if clips:
            config["clips_per_video"] = int(clips.group(1))
    else:
        config["input_size"] = (3, side, side)
    return config


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


def load_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local state dict (.safetensors, or .pth/.pt/.bin read with ``weights_only=True``).
    A classifier of another class count (the weights of an ImageNet model into a 10-class one)
    keeps the model's own, new parameters: their names are returned. Anything else that does
    not fit is an error."""
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
        raise FileFormatError(f"cannot read weights from {path}: {first_line(exc)}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FileFormatError(f"{path} does not hold a state dict of tensors")
    return load_state(model, state, str(path))


def load_state(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> list[str]:
    """``state`` into ``model``, but for a classifier of another class count (see
    :func:`load_weights`); returns the names of the classifier's parameters kept new."""
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    recreated = [k for k in mismatched if k in _classifier_keys(model, own, state)]
    if len(recreated) < len(mismatched):
        wrong = [f"{k} {tuple(state[k].shape)} for {tuple(own[k].shape)}" for k in mismatched if k not in recreated]
        raise FileFormatError(f"weights in {origin} do not fit the model: {_few(wrong)}")
    kept = OrderedDict((k, v) for k, v in state.items() if k not in recreated)
    # version-aware modules (torchvision's MNASNet) read their version from the metadata; a state
    # without any (safetensors, a plain dict) is taken to be of the model's own version
    metadata = getattr(state, "_metadata", None)
    kept._metadata = own._metadata if metadata is None else metadata  # type: ignore[attr-defined]
    result = model.load_state_dict(kept, strict=False)
    missing = [k for k in result.missing_keys if k not in recreated]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if result.unexpected_keys:
        problems.append(f"unexpected {_few(result.unexpected_keys)}")
    if problems:
        raise FileFormatError(f"weights in {origin} do not fit the model: {'; '.join(problems)}")
    return recreated


def _classifier_keys(model: nn.Module, own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> set[str]:
    """The parameters of the model's classifier: timm's ``get_classifier()`` where the model has
    it, else any tensor whose shapes differ in the first dim only (a class count; torchvision's
    heads, auxiliary ones included)."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        heads = get_classifier()
        heads = heads if isinstance(heads, (tuple, list)) else [heads]
        names = {id(m): n for n, m in model.named_modules()}
        prefixes = [names[id(h)] for h in heads if isinstance(h, nn.Module) and id(h) in names]
        if prefixes:
            return {k for k in own if any(k.startswith(p + ".") for p in prefixes)}
    return {k for k in own if k in state and own[k].ndim == state[k].ndim and own[k].shape[1:] == state[k].shape[1:]}


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return shown + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def create(name: str, *, num_classes: int | None = None, weights: str | Path | None = None,
           pretrained: bool = False, pretrained_path: str | Path | None = None,
           model_kwargs: dict[str, Any] | None = None, say: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build a model by name; returns the model and its source (which records ``model_kwargs``,
    the factory's own arguments, so that ``load`` rebuilds the same model). Weights: random, a local state
    dict (``weights``), or pretrained (``pretrained``: downloaded into, or read from, the model
    library's own cache; ``pretrained_path``: the pretrained weights from a local file, as timm's
    ``--pretrained-path``). A classifier of another class count than the weights' is created
    anew, and ``say`` (a print function) is told so."""
    if weights is not None and (pretrained or pretrained_path is not None):
        raise WeightsError("give either --weights or --pretrained/--pretrained-path, not both")
    source = parse_source(name, num_classes, model_kwargs)
    recreated: list[str] = []
    try:
        if pretrained or pretrained_path is not None:
            model, recreated = _pretrained(source, pretrained_path)
            source["weights"] = f"pretrained from {pretrained_path}" if pretrained_path else "pretrained"
        else:
            model = build(source)
    except (ModelNotFoundError, FileFormatError, WeightsError):
        raise
    except Exception as exc:
        raise ModelNotFoundError(f"building {name} failed: {type(exc).__name__}: {first_line(exc)}") from exc
    if weights is not None:
        recreated = load_weights(model, weights)
        source["weights"] = f"from {weights}"
    if recreated and say is not None:
        classes = f"{num_classes} classes" if num_classes else "its class count"
        say(f"the classifier ({_few(recreated)}) is created anew for {classes}: the weights have another class count")
    return model, source


def _pretrained(source: dict[str, Any], path: str | Path | None) -> tuple[nn.Module, list[str]]:
    """The model with pretrained weights, by its library's own mechanism; and the classifier
    parameters created anew for another class count."""
    kind, kwargs = source["kind"], dict(source.get("kwargs", {}))
    if path is not None and not Path(path).is_file():
        raise WeightsError(f"--pretrained-path {path} does not exist")
    if kind == "timm":
        import timm
        overlay = {"file": str(path)} if path is not None else None
        try:
            with _quiet_hub():
                model = timm.create_model(source["name"], pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except Exception as exc:
            if path is not None:
                raise WeightsError(f"cannot load {path} as the pretrained weights of {source['name']}: "
                                   f"{first_line(exc)}") from exc
            raise WeightsError(f"cannot fetch or find the pretrained weights of {source['name']} "
                               f"({type(exc).__name__}); timm looks in the Hugging Face cache {_hf_cache()} and "
                               f"torch's hub cache {_torch_cache()}: fill one of them, or pass --pretrained-path FILE"
                               ) from exc
        classes = kwargs.get("num_classes")
        default = (getattr(model, "pretrained_cfg", None) or {}).get("num_classes")
        recreated = _classifier_names(model) if classes is not None and default and classes != default else []
        return model, recreated
    if kind == "torchvision":
        import torchvision
        model = build(source)  # at the requested class count, random
        if path is not None:
            return model, load_weights(model, path)
        try:
            # torch.hub reports a download on stdout (where --json output goes) and stderr
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                pretrained = torchvision.models.get_model(source["name"], weights="DEFAULT")
        except Exception as exc:
            raise WeightsError(f"cannot fetch or find the pretrained weights of tv:{source['name']} "
                               f"({first_line(exc)}); torchvision looks in torch's hub cache {_torch_cache()}: "
                               f"fill it, or pass --pretrained-path FILE") from exc
        return model, load_state(model, pretrained.state_dict(), f"torchvision's weights of {source['name']}")
    raise WeightsError(f"a model from {source.get('path')} has no pretrained weights: pass --weights FILE")


@contextlib.contextmanager
def _quiet_hub() -> Any:
    """The Hugging Face hub logs each retry of a failed download: the error says it in one line."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _classifier_names(model: nn.Module) -> list[str]:
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    names = {id(m): n for n, m in model.named_modules()}
    if not isinstance(head, nn.Module) or id(head) not in names:
        return []
    return [f"{names[id(head)]}.{k}" for k in head.state_dict()]


def _hf_cache() -> str:
    try:
        from huggingface_hub import constants
        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - timm installs it
        return "~/.cache/huggingface/hub"


def _torch_cache() -> str:
    return str(Path(torch.hub.get_dir()) / "checkpoints")
