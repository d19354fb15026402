"""usconvert: turn timm and torchvision models into universally slimmable networks (US-Nets)."""

from .convert import convert
from .errors import (CalibrationRequiredError, ConversionError, FileFormatError, ModelNotFoundError, UsconvertError,
                     WidthError)
from .models import create
from .net import SlimmableNet
from .serialize import load, save
from .train import Trainer, TrainConfig, train
from .width import active_units, make_divisible

__version__ = "0.1.0"

__all__ = ["CalibrationRequiredError", "ConversionError", "FileFormatError", "ModelNotFoundError", "SlimmableNet",
           "UsconvertError", "WidthError", "TrainConfig", "Trainer", "active_units", "convert", "create", "load",
           "make_divisible", "save", "train"]
