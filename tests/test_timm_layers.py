"""timm's own layer conventions: weight-standardised convolutions (NFNets, BiT), norms over the
channels written with tensor ops (RMSNorm, Global Response Normalization), modules timm
registers as not traceable, and re-parameterised networks (RepVGG, MobileOne) in both forms."""

import pytest
import timm
import torch
from timm.layers import (RmsNorm, RmsNorm2d, RmsNorm2dFp32, RmsNormAct2d, RmsNormFp32, ScaledStdConv2d, SimpleNorm2d,
                         SimpleNorm2dFp32, StdConv2d, register_notrace_module)
from timm.layers.grn import GlobalResponseNorm
from timm.utils.model import reparameterize_model
from torch import nn

from helpers import TOL, check_conversion, frozen_reasons
from usconvert.export import export
from usconvert.verify import relative_error

SIZE = (3, 16, 16)


def _head(channels: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 5)]


def test_weight_standardised_convolutions_standardise_over_the_active_inputs():
    model = nn.Sequential(StdConv2d(3, 16, 3, padding=1), nn.ReLU(),
                          ScaledStdConv2d(16, 32, 3, padding=1, gain_init=0.7), nn.ReLU(),
                          StdConv2d(32, 32, 1), nn.ReLU(), *_head(32))
    with torch.no_grad():  # a gain per output channel that differs: a wrong slice of it shows
        model[2].gain.copy_(torch.linspace(0.5, 1.5, 32).view(32, 1, 1, 1))
    net = check_conversion(model, SIZE)
    assert frozen_reasons(net) == ["model output"]
    net.eval()
    net.set_width(0.25)
    x = torch.randn(2, *SIZE, dtype=torch.float64)
    exported = export(net, 0.25)
    assert exported.get_submodule("2").gain.shape == (8, 1, 1, 1)
    assert type(exported.get_submodule("2")) is ScaledStdConv2d
    with torch.no_grad():
        assert relative_error(exported(x), net(x)) < 1e-9


class ChannelNorms(nn.Module):
    """timm's norms over the channels of each position, channels first and last: each computes
    a mean over the channels, which a width takes over its active ones. The ``Fp32`` kinds
    compute in float32 whatever the input's type (DeepSeek's ViT, without a weight)."""

    def __init__(self, fp32: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 1)
        self.rms2d, self.simple2d = (RmsNorm2dFp32(32), SimpleNorm2dFp32(32)) if fp32 else (RmsNorm2d(32),
                                                                                            SimpleNorm2d(32))
        self.act2d = RmsNormAct2d(32)  # a subclass (with its activation): its dim is found by size
        self.fc1, self.grn, self.fc2 = nn.Linear(32, 64), GlobalResponseNorm(64), nn.Linear(64, 32)
        self.grn2d = GlobalResponseNorm(32, channels_last=False)
        self.rms, self.head = RmsNormFp32(32, affine=False) if fp32 else RmsNorm(32), nn.Linear(32, 5)
        with torch.no_grad():  # GRN starts as the identity (zero weight and bias): make every channel count
            for p in self.parameters():
                if p.ndim == 1 and p.shape[0] in (32, 64):
                    p.copy_(torch.rand_like(p) + 0.5)

    def forward(self, x):
        x = self.grn2d(self.act2d(self.simple2d(self.rms2d(self.stem(x))))).permute(0, 2, 3, 1)
        x = x + self.fc2(self.grn(torch.relu(self.fc1(x))))
        return self.head(self.rms(x).mean((1, 2)))


@pytest.mark.parametrize("fp32", [False, True], ids=["own_precision", "fp32"])
def test_norms_over_channels_normalise_over_the_active_ones(fp32):
    # float32 rounds the same sums of the network and its sub-network a unit apart here and there
    net = check_conversion(ChannelNorms(fp32), SIZE, configurations=2, tol=1e-6 if fp32 else TOL)
    assert frozen_reasons(net) == ["model output"]
    norms = {"rms2d": 1, "simple2d": 1, "act2d": 1, "grn2d": 1, "grn": 3, "rms": 3}  # the dims they normalise
    assert {name: net.layers[name].channel_layout_dim for name in norms} == norms
    net.eval()
    net.set_width(0.25)
    exported = export(net, 0.25)
    assert exported.get_submodule("rms2d").normalized_shape == (8,)
    assert exported.get_submodule("grn").weight.shape == (16,)
    x = torch.randn(2, *SIZE, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(exported(x), net(x)) < 1e-9
    assert type(exported.get_submodule("rms")) is (RmsNormFp32 if fp32 else RmsNorm)


@register_notrace_module
class _TraceableBlock(nn.Module):
    """Registered as not traceable (as timm registers NormFreeBlock), though its forward traces."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 2 * channels, 1)
        self.conv2 = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


@register_notrace_module
class _DataDependentBlock(nn.Module):
    """Registered as not traceable because it is not: Python control flow on tensor values."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return self.conv(x) if x.mean() > 0 else x


def test_registered_blocks_that_trace_are_traced_through():
    net = check_conversion(nn.Sequential(nn.Conv2d(3, 16, 3), _TraceableBlock(16), *_head(16)), SIZE)
    assert frozen_reasons(net) == ["model output"]
    net.set_width(0.25)
    assert len(net.active_channels("1.conv1")["out"]) == 8 and len(net.active_channels("1.conv2")["out"]) == 8


def test_registered_blocks_that_do_not_trace_stay_leaves_and_freeze():
    net = check_conversion(nn.Sequential(nn.Conv2d(3, 16, 3), _DataDependentBlock(16), nn.Conv2d(16, 24, 1),
                                         *_head(24)), SIZE)
    assert any("_DataDependentBlock" in reason for reason in frozen_reasons(net))
    net.set_width(0.25)
    assert len(net.active_channels("0")["out"]) == 16  # the leaf block's input and output freeze
    assert len(net.active_channels("2")["out"]) == 8


@pytest.mark.parametrize("name", ["repvgg_a0", "mobileone_s0"])
@pytest.mark.parametrize("deployed", [False, True])
def test_reparameterised_networks_convert_in_training_and_deployed_form(name, deployed):
    model = timm.create_model(name, num_classes=10)
    if deployed:
        model = reparameterize_model(model.eval())
        assert not any("rbr_" in n or "conv_kxk" in n for n, _ in model.named_modules())
    net = check_conversion(model, (3, 32, 32), batch=2)
    assert frozen_reasons(net) == ["model output"]


def test_global_response_norm_over_a_channel_dimension_freezes_it():
    """GRN reduces over its spatial dims too: given an NCHW map as if channels last, it takes
    the norm over C and H, and normalises over W."""
    model = nn.Sequential(nn.Conv2d(3, 32, 1), GlobalResponseNorm(SIZE[2], channels_last=True), *_head(32))
    net = check_conversion(model, SIZE)
    assert net.space("0:out").frozen
    assert any("GlobalResponseNorm statistics over a channel dimension" in r for r in net.space("0:out").frozen_reasons)
