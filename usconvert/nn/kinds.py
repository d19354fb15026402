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
LAYER_NORM_TYPES: tuple[type, ...] = (nn.LayerNorm,)
# the dim each layer norm's own class normalises (a subclass may permute first: found by size)
LAYER_NORM_DIMS: dict[type, int] = {nn.LayerNorm: -1}
RECURRENT_TYPES = (nn.RNNBase,)  # LSTM, GRU, RNN

try:  # convolutions that standardise their weight per output channel (NFNets, BiT): a width
    # standardises over its active inputs, as batch norm normalises with the width's statistics
    from timm.layers import ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame
    WEIGHT_STANDARDIZED_CONV_TYPES: tuple[type, ...] = (StdConv2d, StdConv2dSame, ScaledStdConv2d,
                                                        ScaledStdConv2dSame)
except ImportError:  # pragma: no cover
    WEIGHT_STANDARDIZED_CONV_TYPES = ()

try:  # timm's norms over the channels of each position, written with tensor ops (mean over C):
    # as layer norm, a width normalises over its active channels (RMSNorm in MobileNetV5 and
    # ConvNeXt-RMS, and in float32 whatever the input's type in DeepSeek's ViT; Global Response
    # Normalization in ConvNeXt V2 and CSATv2, whose channel dim is its ``channel_dim``)
    import timm.layers as _timm_layers
    from timm.layers.grn import GlobalResponseNorm
    _TIMM_NORM_DIMS = {getattr(_timm_layers, name + precision): dim
                       for name, dim in (("RmsNorm", -1), ("SimpleNorm", -1), ("RmsNorm2d", 1), ("SimpleNorm2d", 1))
                       for precision in ("", "Fp32") if hasattr(_timm_layers, name + precision)}
    LAYER_NORM_TYPES += (*_TIMM_NORM_DIMS, GlobalResponseNorm)
    LAYER_NORM_DIMS.update(_TIMM_NORM_DIMS)
except ImportError:  # pragma: no cover
    GlobalResponseNorm = None


def layer_norm_size(module: nn.Module) -> int:
    """The channels a layer norm normalises: its ``normalized_shape`` (one dim), or for a norm
    without one (Global Response Normalization), the length of its per-channel weight."""
    shape = getattr(module, "normalized_shape", None)
    return shape[0] if shape is not None else module.weight.shape[0]


def layer_norm_dim(module: nn.Module) -> int | None:
    """The dim ``module`` normalises, where its class says (None: find it by size)."""
    if GlobalResponseNorm is not None and type(module) is GlobalResponseNorm:
        return module.channel_dim
    return LAYER_NORM_DIMS.get(type(module))


SLIMMABLE_LAYER_TYPES = (CONV_TYPES + LINEAR_TYPES + BATCH_NORM_TYPES + GROUP_NORM_TYPES + LAYER_NORM_TYPES
                         + RECURRENT_TYPES)
