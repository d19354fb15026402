"""Slimmable layers: modules that run on the leading (or gathered) active channels of their own
full-size parameters, and the run-time ops the graph rewrite inserts."""

from .base import SlimLayer, make_slimmable, original_class
from .conv import SlimConv, SlimLinear
from .layout import Layout, Space
from .norm import (OWN_STATISTICS, MissingStatistics, SlimBatchNorm, SlimGroupNorm, SlimLayerNorm,
                   WidthStatistics)
from .ops import ActiveSize, ChannelSlice, ChannelSplit, ParameterSlice
from .recurrent import SlimRecurrent

LAYER_CLASSES = {
    "conv": SlimConv,
    "linear": SlimLinear,
    "batch_norm": SlimBatchNorm,
    "group_norm": SlimGroupNorm,
    "layer_norm": SlimLayerNorm,
    "recurrent": SlimRecurrent,
}

__all__ = ["LAYER_CLASSES", "ActiveSize", "ChannelSlice", "ChannelSplit", "Layout", "MissingStatistics",
           "OWN_STATISTICS", "ParameterSlice", "SlimBatchNorm", "SlimConv", "SlimGroupNorm", "SlimLayer",
           "SlimLayerNorm", "SlimLinear", "SlimRecurrent", "Space", "WidthStatistics", "make_slimmable",
           "original_class"]
