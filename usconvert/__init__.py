"""usconvert: turn timm and torchvision models into universally slimmable networks (US-Nets)."""

from .calibrate import calibrate, ensure_calibrated
from .convert import convert
from .errors import (CalibrationRequiredError, ConversionError, FileFormatError, ModelNotFoundError, UsconvertError,
                     WidthError)
from .models import create
from .net import SlimmableNet
from .export import export, load_exported
from .serialize import load, save
from .spectrum import spectrum
from .train import Trainer, TrainConfig, train
from .width import active_units, make_divisible

__version__ = "0.1.0"

__all__ = ["CalibrationRequiredError", "ConversionError", "FileFormatError", "ModelNotFoundError", "SlimmableNet",
           "UsconvertError", "WidthError", "TrainConfig", "Trainer", "active_units", "calibrate", "convert", "create", "ensure_calibrated",
           "export", "load", "load_exported", "make_divisible", "save", "spectrum", "train"]
