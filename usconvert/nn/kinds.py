"""The layer kinds the slimmable layers handle, by base class: every subclass (timm's
``BatchNormAct2d``, ``Conv2dSame``, ``LayerNorm2d`` ...) is handled through its own forward."""

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

CONV_TYPES = (_ConvNd,)
NOT_SLIMMABLE_CONV_TYPES = (_ConvTransposeNd,)
LINEAR_TYPES = (nn.Linear,)
BATCH_NORM_TYPES = (_BatchNorm,)
GROUP_NORM_TYPES = (nn.GroupNorm,)
LAYER_NORM_TYPES = (nn.LayerNorm,)
RECURRENT_TYPES = (nn.RNNBase,)  # LSTM, GRU, RNN

try:  # convolutions that standardise their weight per output channel (NFNets, BiT): a width
    # standardises over its active inputs, as batch norm normalises with the width's statistics
    from timm.layers import ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame
    WEIGHT_STANDARDIZED_CONV_TYPES: tuple[type, ...] = (StdConv2d, StdConv2dSame, ScaledStdConv2d,
                                                        ScaledStdConv2dSame)
except ImportError:  # pragma: no cover
    WEIGHT_STANDARDIZED_CONV_TYPES = ()

SLIMMABLE_LAYER_TYPES = (CONV_TYPES + LINEAR_TYPES + BATCH_NORM_TYPES + GROUP_NORM_TYPES + LAYER_NORM_TYPES
                         + RECURRENT_TYPES)
