"""usconvert: turn timm and torchvision models into universally slimmable networks (US-Nets).

The API below is imported on first use, so that ``usconvert --help`` and argument errors answer
without importing torch."""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (CalibrationRequiredError, ConversionError, FileFormatError, ModelNotFoundError, UsconvertError,
                     WidthError)
from .version import __version__ as __version__

_API = {"calibrate": "calibrate", "ensure_calibrated": "calibrate", "convert": "convert", "create": "models",
        "SlimmableNet": "net", "export": "export", "load_exported": "export", "load": "serialize", "save": "serialize",
        "spectrum": "spectrum", "Trainer": "train", "TrainConfig": "train", "train": "train",
        "sort_channels": "sorting",
        "active_units": "width", "make_divisible": "width"}

__all__ = ["CalibrationRequiredError", "ConversionError", "FileFormatError", "ModelNotFoundError", "SlimmableNet",
           "TrainConfig", "Trainer", "UsconvertError", "WidthError", "active_units", "calibrate", "convert", "create",
           "ensure_calibrated", "export", "load", "load_exported", "make_divisible", "save", "sort_channels",
           "spectrum", "train"]

if TYPE_CHECKING:
    from .calibrate import calibrate, ensure_calibrated
    from .convert import convert
    from .export import export, load_exported
    from .models import create
    from .net import SlimmableNet
    from .serialize import load, save
    from .sorting import sort_channels
    from .spectrum import spectrum
    from .train import Trainer, TrainConfig, train
    from .width import active_units, make_divisible


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'usconvert' has no attribute {name!r}")
    value = getattr(import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})


class _Package(types.ModuleType):
    """``usconvert.calibrate``, ``.convert``, ``.export``, ``.spectrum`` and ``.train`` name the
    functions, as with eager imports: importing the submodule of the same name must not rebind
    the name to the module (the submodule stays importable by its full name)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
