"""One exception type per kind of user mistake; the CLI turns each into one line and exit code 2."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type where it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class UsconvertError(Exception):
    """Base class of every error usconvert reports to a user."""


class ModelNotFoundError(UsconvertError):
    """A model name that no known source (timm, torchvision, a Python file) provides."""


class WidthError(UsconvertError):
    """A width ratio or width configuration outside what the network supports."""


class ConversionError(UsconvertError):
    """A model that cannot be traced or converted at all."""


class DataError(UsconvertError):
    """A dataset that cannot be found or does not fit the model."""


class FileFormatError(UsconvertError):
    """A file that is missing, corrupt, or not written by usconvert."""


class CalibrationRequiredError(UsconvertError):
    """Eval at a width whose batch-norm statistics have not been computed."""


class TrainingInterrupted(UsconvertError):
    """Training stopped on request (Ctrl-C); the checkpoint holds where it stopped."""


class WeightsError(UsconvertError):
    """Pretrained weights that cannot be found, fetched or fitted to the model."""
